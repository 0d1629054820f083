//! Cursor pagination shared by every list method: an opaque cursor, a limit capped at
//! [`MAX_PAGE_SIZE`], items in ascending id order (UUID v7, so creation order).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use uuid::Uuid;

use crate::error::{Error, Result};

/// The largest number of items one page holds; larger limits are clamped to it.
pub const MAX_PAGE_SIZE: u32 = 1000;
/// The page size used when a request gives none (limit `0`).
pub const DEFAULT_PAGE_SIZE: u32 = 100;

/// An opaque position in a list: resume after the item it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor(Uuid);

impl Cursor {
    /// The cursor that resumes after the item with this id.
    #[must_use]
    pub const fn after(id: Uuid) -> Self {
        Self(id)
    }

    /// The id of the last item of the previous page.
    #[must_use]
    pub const fn last_id(&self) -> Uuid {
        self.0
    }

    /// The opaque text form handed to clients.
    #[must_use]
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0.as_bytes())
    }

    /// Parses the text form produced by [`Cursor::encode`].
    pub fn decode(token: &str) -> Result<Self> {
        let bytes = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| bad_token(token))?;
        let uuid = Uuid::from_slice(&bytes).map_err(|_| bad_token(token))?;
        Ok(Self(uuid))
    }
}

fn bad_token(token: &str) -> Error {
    Error::invalid(
        "page_token",
        format!("`{token}` is not a page token of this list"),
    )
}

/// Which page of a list to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PageRequest {
    /// Resume after this position; `None` starts at the beginning.
    pub after: Option<Cursor>,
    /// How many items at most; `0` means [`DEFAULT_PAGE_SIZE`], anything above
    /// [`MAX_PAGE_SIZE`] is clamped.
    pub limit: u32,
}

impl PageRequest {
    /// The first page, of at most `limit` items.
    #[must_use]
    pub const fn first(limit: u32) -> Self {
        Self { after: None, limit }
    }

    /// A request from the wire form: an optional page token (empty = first page) and a
    /// limit.
    pub fn from_token(token: &str, limit: u32) -> Result<Self> {
        let after = if token.is_empty() {
            None
        } else {
            Some(Cursor::decode(token)?)
        };
        Ok(Self { after, limit })
    }

    /// The number of items this request returns at most.
    #[must_use]
    pub const fn effective_limit(&self) -> u32 {
        match self.limit {
            0 => DEFAULT_PAGE_SIZE,
            n if n > MAX_PAGE_SIZE => MAX_PAGE_SIZE,
            n => n,
        }
    }

    /// The id the page starts after, if any.
    #[must_use]
    pub fn after_id(&self) -> Option<Uuid> {
        self.after.map(|c| c.last_id())
    }
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The items, in ascending id order.
    pub items: Vec<T>,
    /// Where the next page starts; `None` when this is the last page.
    pub next: Option<Cursor>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` items read in id order: the extra item, if
    /// present, only proves that a next page exists. Backends read one more row than
    /// asked for and hand it here.
    pub fn from_overfetch(
        mut items: Vec<T>,
        request: &PageRequest,
        id: impl Fn(&T) -> Uuid,
    ) -> Self {
        let limit = request.effective_limit() as usize;
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|last| Cursor::after(id(last)))
        } else {
            None
        };
        Self { items, next }
    }

    /// The next page's token, or an empty string on the last page (the wire form).
    #[must_use]
    pub fn next_token(&self) -> String {
        self.next.map(|c| c.encode()).unwrap_or_default()
    }

    /// Maps the items, keeping the cursor.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next: self.next,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let c = Cursor::after(Uuid::now_v7());
        assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
        let err = Cursor::decode("%%%").unwrap_err();
        assert_eq!(err.field(), Some("page_token"));
        assert!(Cursor::decode("AAAA").is_err());
    }

    #[test]
    fn limits_default_and_clamp() {
        assert_eq!(PageRequest::first(0).effective_limit(), DEFAULT_PAGE_SIZE);
        assert_eq!(PageRequest::first(5).effective_limit(), 5);
        assert_eq!(PageRequest::first(5000).effective_limit(), MAX_PAGE_SIZE);
    }

    #[test]
    fn overfetch_sets_next_only_when_more_exist() {
        let ids: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
        let req = PageRequest::first(3);
        let page = Page::from_overfetch(ids.clone(), &req, |u| *u);
        assert_eq!(page.items.len(), 3);
        assert_eq!(page.next, Some(Cursor::after(ids[2])));
        let page = Page::from_overfetch(ids[..3].to_vec(), &req, |u| *u);
        assert_eq!(page.next, None);
        assert_eq!(page.next_token(), "");
    }
}
