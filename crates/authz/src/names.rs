//! Cedar turns every entity type and extension function name it is given into a
//! `Name` by running its full grammar (a LALRPOP parser that builds a fresh lexer,
//! regular-expression caches included, on every call: a few microseconds each). A
//! check names the same few types again and again, so this module parses each type
//! name once per thread and keeps it, and builds `Type::"id"` uids and extension values
//! from the kept names. Anything unusual (escapes in an id, a name Cedar refuses) is
//! left to Cedar's own parser by the callers, so accepted input and error messages
//! stay Cedar's.
//!
//! The caches are per thread and bounded: a thread that has seen
//! [`MAX_CACHED`] distinct names (or [`MAX_CACHED_EXTENSIONS`] distinct extension
//! values) starts again from empty, so input naming ever new ones cannot grow memory.

use std::cell::RefCell;
use std::collections::HashMap;
use std::str::FromStr;

use cedar_policy::{EntityId, EntityTypeName, EntityUid, RestrictedExpression};

/// The most type names one thread keeps.
const MAX_CACHED: usize = 1024;

/// The most extension values one thread keeps. Their arguments vary far more than type
/// names (an IP address per client), and a miss costs a parse of the constructor's
/// name (tens of microseconds with Cedar's grammar): a few MiB per thread at most.
const MAX_CACHED_EXTENSIONS: usize = 16_384;

/// The extension constructors of Cedar's explicit JSON format.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Extension {
    Ip,
    Decimal,
    Datetime,
    Duration,
}

thread_local! {
    static TYPES: RefCell<HashMap<Box<str>, EntityTypeName>> = RefCell::new(HashMap::new());
    static EXTENSIONS: RefCell<HashMap<(Extension, Box<str>), RestrictedExpression>> =
        RefCell::new(HashMap::new());
}

/// Looks `key` up in `cache`, else makes the value with `make` and keeps it (a failure
/// is not kept).
fn cached<K, V, Q>(
    cache: &'static std::thread::LocalKey<RefCell<HashMap<K, V>>>,
    capacity: usize,
    key: &Q,
    owned: impl FnOnce() -> K,
    make: impl FnOnce() -> Option<V>,
) -> Option<V>
where
    K: std::borrow::Borrow<Q> + Eq + std::hash::Hash,
    Q: Eq + std::hash::Hash + ?Sized,
    V: Clone,
{
    if let Some(hit) = cache.with_borrow(|map| map.get(key).cloned()) {
        return Some(hit);
    }
    let value = make()?;
    cache.with_borrow_mut(|map| {
        if map.len() >= capacity {
            map.clear();
        }
        map.insert(owned(), value.clone());
    });
    Some(value)
}

/// The entity type `text` (e.g. `User`, `App::Document`), parsed by Cedar the first time
/// a thread sees it; `None` if Cedar refuses it.
pub(crate) fn type_name(text: &str) -> Option<EntityTypeName> {
    cached(
        &TYPES,
        MAX_CACHED,
        text,
        || text.into(),
        || EntityTypeName::from_str(text).ok(),
    )
}

/// The uid `Type::"id"` when `text` has exactly that shape and the id has no escapes
/// (no `\` and no `"`); `None` otherwise, for Cedar's parser to decide.
pub(crate) fn uid(text: &str) -> Option<EntityUid> {
    let (type_text, rest) = text.split_once("::\"")?;
    let id = rest.strip_suffix('"')?;
    if id.contains(['"', '\\']) {
        return None;
    }
    Some(EntityUid::from_type_name_and_id(
        type_name(type_text)?,
        EntityId::new(id),
    ))
}

/// The extension value `function(arg)` of Cedar's JSON form (`ip`/`ipaddr`,
/// `decimal`, `datetime`, `duration`); `None` for another function. Like Cedar's own
/// constructors it does not check `arg`: evaluating the value does.
pub(crate) fn extension(function: &str, arg: &str) -> Option<RestrictedExpression> {
    let kind = match function {
        "ip" | "ipaddr" => Extension::Ip,
        "decimal" => Extension::Decimal,
        "datetime" => Extension::Datetime,
        "duration" => Extension::Duration,
        _ => return None,
    };
    let key = (kind, Box::<str>::from(arg));
    cached(
        &EXTENSIONS,
        MAX_CACHED_EXTENSIONS,
        &key,
        || key.clone(),
        || {
            Some(match kind {
                Extension::Ip => RestrictedExpression::new_ip(arg),
                Extension::Decimal => RestrictedExpression::new_decimal(arg),
                Extension::Datetime => RestrictedExpression::new_datetime(arg),
                Extension::Duration => RestrictedExpression::new_duration(arg),
            })
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_equal_cedars_parse() {
        for text in [
            r#"User::"alice""#,
            r#"App::Document::"doc 1""#,
            r#"Action::"view""#,
            r#"User::"""#,
            r#"User::"ünï""#,
        ] {
            let cedar = EntityUid::from_str(text).unwrap();
            assert_eq!(uid(text), Some(cedar.clone()), "{text}");
            // A second time from the cache.
            assert_eq!(uid(text), Some(cedar), "{text}");
        }
    }

    #[test]
    fn unusual_uids_are_left_to_cedar() {
        for text in [
            r#"User::"a\"b""#,
            r#"User::"a\\b""#,
            r#"User::"a"::"b""#,
            r#"User::"a" "#,
            r#"User :: "spaced""#,
            r#"User::alice"#,
            r#"1User::"a""#,
            r#"if::"a""#,
            "",
        ] {
            assert_eq!(uid(text), None, "{text}");
        }
    }

    #[test]
    fn extension_values_equal_cedars_constructors() {
        let pairs = [
            ("ip", "10.0.0.1", RestrictedExpression::new_ip("10.0.0.1")),
            ("ipaddr", "::1", RestrictedExpression::new_ip("::1")),
            ("decimal", "1.25", RestrictedExpression::new_decimal("1.25")),
            (
                "datetime",
                "2024-01-01",
                RestrictedExpression::new_datetime("2024-01-01"),
            ),
            ("duration", "1h", RestrictedExpression::new_duration("1h")),
        ];
        for (function, arg, expected) in pairs {
            for _ in 0..2 {
                let got = extension(function, arg).unwrap();
                assert_eq!(got, expected);
            }
        }
        assert!(extension("unknown", "x").is_none());
    }

    #[test]
    fn the_caches_stay_bounded() {
        for i in 0..(MAX_CACHED * 2 + 5) {
            assert!(type_name(&format!("T{i}")).is_some());
        }
        assert!(TYPES.with_borrow(HashMap::len) <= MAX_CACHED);
        thread_local! {
            static SMALL: RefCell<HashMap<u32, u32>> = RefCell::new(HashMap::new());
        }
        for i in 0..20 {
            assert_eq!(cached(&SMALL, 8, &i, || i, || Some(i * 2)), Some(i * 2));
            assert!(SMALL.with_borrow(HashMap::len) <= 8);
        }
        // A failure is not kept.
        assert_eq!(cached(&SMALL, 8, &99, || 99, || None), None);
        assert!(!SMALL.with_borrow(|m| m.contains_key(&99)));
    }
}
