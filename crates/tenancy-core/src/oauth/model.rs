//! The records of the OAuth2/OpenID Connect provider: clients, authorization codes,
//! grants (token families), refresh tokens, consents and login sessions.
//!
//! Values are validated when they are built from input ([`Scopes::parse`],
//! [`RedirectUri::parse`]); stores keep what they are given.

use std::collections::BTreeSet;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::identity::TokenHash;
use crate::ids::{ClientId, GrantId, TenantId, UserId};

/// At most this many scopes in one request or registration.
pub const MAX_SCOPES: usize = 64;
/// At most this many bytes in one scope token.
pub const MAX_SCOPE_BYTES: usize = 128;
/// At most this many redirect URIs per client.
pub const MAX_REDIRECT_URIS: usize = 32;
/// At most this many bytes in a redirect URI.
pub const MAX_URI_BYTES: usize = 2048;

/// A set of scope tokens (RFC 6749 §3.3), kept sorted and free of duplicates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Scopes(BTreeSet<String>);

impl Scopes {
    /// Parses a space-delimited scope string; `InvalidInput` on field `scope` for a
    /// character outside RFC 6749's `scope-token`, an over-long token or too many tokens.
    pub fn parse(s: &str) -> Result<Self> {
        let mut set = BTreeSet::new();
        for token in s.split(' ').filter(|t| !t.is_empty()) {
            if token.len() > MAX_SCOPE_BYTES {
                return Err(Error::invalid(
                    "scope",
                    format!("scope tokens are at most {MAX_SCOPE_BYTES} bytes"),
                ));
            }
            if !token
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
            {
                return Err(Error::invalid(
                    "scope",
                    format!("`{}` is not a valid scope token", token.escape_default()),
                ));
            }
            set.insert(token.to_owned());
        }
        if set.len() > MAX_SCOPES {
            return Err(Error::invalid(
                "scope",
                format!("at most {MAX_SCOPES} scopes"),
            ));
        }
        Ok(Self(set))
    }

    /// The scopes from an iterator of already-valid tokens (checked as by [`Scopes::parse`]).
    pub fn from_tokens<I: IntoIterator<Item = S>, S: AsRef<str>>(tokens: I) -> Result<Self> {
        let joined: Vec<String> = tokens.into_iter().map(|t| t.as_ref().to_owned()).collect();
        Self::parse(&joined.join(" "))
    }

    /// Whether `scope` is in the set.
    #[must_use]
    pub fn contains(&self, scope: &str) -> bool {
        self.0.contains(scope)
    }

    /// Whether every scope of `self` is in `other`.
    #[must_use]
    pub fn is_subset(&self, other: &Scopes) -> bool {
        self.0.is_subset(&other.0)
    }

    /// The scopes in both sets.
    #[must_use]
    pub fn intersection(&self, other: &Scopes) -> Scopes {
        Scopes(self.0.intersection(&other.0).cloned().collect())
    }

    /// The scopes in either set.
    #[must_use]
    pub fn union(&self, other: &Scopes) -> Scopes {
        Scopes(self.0.union(&other.0).cloned().collect())
    }

    /// Whether the set is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The scope tokens, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// The set as a sorted set of strings.
    #[must_use]
    pub fn as_set(&self) -> &BTreeSet<String> {
        &self.0
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for s in &self.0 {
            if !first {
                f.write_str(" ")?;
            }
            f.write_str(s)?;
            first = false;
        }
        Ok(())
    }
}

impl TryFrom<String> for Scopes {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Self::parse(&s)
    }
}

impl From<Scopes> for String {
    fn from(s: Scopes) -> Self {
        s.to_string()
    }
}

/// A registered redirect URI (or post-logout redirect URI).
///
/// Registration accepts absolute `https` URIs, `http` only on a loopback IP literal
/// (`127.0.0.1`, `[::1]`, RFC 8252 §7.3), and private-use schemes containing a dot
/// (`com.example.app:/callback`, RFC 8252 §7.1); never a fragment or userinfo.
/// Matching is exact, byte for byte, except that a loopback URI matches any port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RedirectUri(String);

impl RedirectUri {
    /// Validates a URI for registration; `InvalidInput` on field `redirect_uri`.
    pub fn parse(s: &str) -> Result<Self> {
        let field = "redirect_uri";
        if s.len() > MAX_URI_BYTES {
            return Err(Error::invalid(
                field,
                format!("is longer than {MAX_URI_BYTES} bytes"),
            ));
        }
        let url = url::Url::parse(s)
            .map_err(|e| Error::invalid(field, format!("`{s}` is not an absolute URI: {e}")))?;
        if url.fragment().is_some() {
            return Err(Error::invalid(field, format!("`{s}` has a fragment")));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Error::invalid(field, format!("`{s}` has userinfo")));
        }
        match url.scheme() {
            "https" => {}
            "http" if is_loopback(&url) => {}
            "http" => {
                return Err(Error::invalid(
                    field,
                    format!("`{s}` uses http on a host other than a loopback IP literal"),
                ));
            }
            scheme if scheme.contains('.') => {}
            scheme => {
                return Err(Error::invalid(
                    field,
                    format!(
                        "`{s}` uses scheme `{scheme}`: use https, loopback http or a private-use scheme like `com.example.app`"
                    ),
                ));
            }
        }
        Ok(Self(s.to_owned()))
    }

    /// The URI as registered.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether a URI presented in a request is this registered one: exact comparison,
    /// except that a loopback `http` URI matches with any port (RFC 8252 §7.3).
    #[must_use]
    pub fn matches(&self, presented: &str) -> bool {
        if self.0 == presented {
            return true;
        }
        let Ok(registered) = url::Url::parse(&self.0) else {
            return false;
        };
        if registered.scheme() != "http" || !is_loopback(&registered) {
            return false;
        }
        let Ok(candidate) = url::Url::parse(presented) else {
            return false;
        };
        candidate.scheme() == "http"
            && candidate.host() == registered.host()
            && candidate.username().is_empty()
            && candidate.password().is_none()
            && candidate.fragment().is_none()
            && strip_port_text(&self.0) == strip_port_text(presented)
    }
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        _ => false,
    }
}

/// `http://127.0.0.1:8080/cb` → `http://127.0.0.1/cb`, textually.
fn strip_port_text(s: &str) -> String {
    let Some(rest) = s.strip_prefix("http://") else {
        return s.to_owned();
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let host = if authority.starts_with('[') {
        authority
            .find(']')
            .map_or(authority, |i| authority.get(..=i).unwrap_or(authority))
    } else {
        authority.split(':').next().unwrap_or(authority)
    };
    format!("http://{host}{path}")
}

impl fmt::Display for RedirectUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for RedirectUri {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Self::parse(&s)
    }
}

impl From<RedirectUri> for String {
    fn from(u: RedirectUri) -> Self {
        u.0
    }
}

/// Whether a client can keep a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientKind {
    /// A server-side application that authenticates to the token endpoint.
    Confidential,
    /// A browser or native application: no secret, PKCE required.
    Public,
}

/// How a client authenticates to the token, introspection and revocation endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// HTTP Basic with the client id and secret.
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
    /// A JWT signed with one of the client's registered keys (RFC 7523).
    PrivateKeyJwt,
    /// No authentication (public clients only).
    None,
}

impl AuthMethod {
    /// The name used in OAuth metadata.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
            Self::PrivateKeyJwt => "private_key_jwt",
            Self::None => "none",
        }
    }
}

/// The grants a client may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantType {
    /// The authorization code grant (with PKCE).
    AuthorizationCode,
    /// The client credentials grant.
    ClientCredentials,
    /// The refresh token grant.
    RefreshToken,
}

impl GrantType {
    /// The name used on the wire.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::AuthorizationCode => "authorization_code",
            Self::ClientCredentials => "client_credentials",
            Self::RefreshToken => "refresh_token",
        }
    }
}

/// A fast keyed hash (HMAC-SHA256 under a server key) of a client secret. Client secrets
/// are 256-bit random values, so a slow password hash would add nothing but latency.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SecretDigest(pub [u8; 32]);

impl fmt::Debug for SecretDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretDigest(..)")
    }
}

/// A registered client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Client {
    /// The client id.
    pub id: ClientId,
    /// The owning tenant, or `None` for a global client any tenant's users may use.
    pub tenant_id: Option<TenantId>,
    /// A display name shown on the consent page.
    pub name: String,
    /// Confidential or public.
    pub kind: ClientKind,
    /// How it authenticates.
    pub auth_method: AuthMethod,
    /// The keyed hash of its secret (secret methods only).
    pub secret_digest: Option<SecretDigest>,
    /// Its public keys as a JWK Set (`private_key_jwt` only).
    pub jwks: Option<serde_json::Value>,
    /// Registered redirect URIs.
    pub redirect_uris: Vec<RedirectUri>,
    /// Registered post-logout redirect URIs.
    pub post_logout_redirect_uris: Vec<RedirectUri>,
    /// Grants it may use.
    pub grant_types: Vec<GrantType>,
    /// Scopes it may ask for.
    pub scopes: Scopes,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Optimistic-concurrency version, 1 on insert.
    pub version: i64,
}

/// A single-use authorization code, stored by hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationCode {
    /// SHA-256 of the code.
    pub code_hash: TokenHash,
    /// The tenant the user chose.
    pub tenant_id: TenantId,
    /// The client it was issued to.
    pub client_id: ClientId,
    /// The user who authorized.
    pub user_id: UserId,
    /// The grant every token redeemed from it belongs to.
    pub grant_id: GrantId,
    /// The redirect URI of the authorization request, exactly as presented.
    pub redirect_uri: String,
    /// The granted scopes.
    pub scope: Scopes,
    /// The OpenID Connect nonce, if any.
    pub nonce: Option<String>,
    /// The PKCE S256 challenge, if any.
    pub code_challenge: Option<String>,
    /// When the user authenticated.
    pub auth_time: DateTime<Utc>,
    /// When it was issued.
    pub issued_at: DateTime<Utc>,
    /// When it stops being redeemable.
    pub expires_at: DateTime<Utc>,
}

/// What redeeming a code found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeRedemption {
    /// The code was unused and is now consumed: the caller may issue tokens.
    Redeemed(AuthorizationCode),
    /// The code had been redeemed before: the caller must revoke its grant.
    AlreadyRedeemed(AuthorizationCode),
    /// No such code for this tenant.
    Unknown,
}

/// A grant: one authorization, the family of every token issued from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The grant id (the `gid` claim of its access tokens).
    pub id: GrantId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// The client.
    pub client_id: ClientId,
    /// The user, or `None` for a client acting for itself.
    pub user_id: Option<UserId>,
    /// The scopes granted.
    pub scope: Scopes,
    /// When the user authenticated.
    pub auth_time: Option<DateTime<Utc>>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A refresh token, stored by hash; rotated on every use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshToken {
    /// SHA-256 of the token.
    pub token_hash: TokenHash,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// Its family.
    pub grant_id: GrantId,
    /// The client it was issued to.
    pub client_id: ClientId,
    /// The scopes it can refresh (never more than its grant's).
    pub scope: Scopes,
    /// When it was issued.
    pub issued_at: DateTime<Utc>,
    /// When it expires.
    pub expires_at: DateTime<Utc>,
    /// When it was used (rotated), if it was.
    pub used_at: Option<DateTime<Utc>>,
}

/// What rotating a refresh token found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshRotation {
    /// The token was unused and is now spent; the replacement was stored.
    Rotated(RefreshToken),
    /// The token had been used before (a replay): nothing was stored; the caller must
    /// revoke the whole grant.
    Replayed(RefreshToken),
    /// No such token for this tenant.
    Unknown,
}

/// A user's remembered consent to a client, per tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consent {
    /// The tenant.
    pub tenant_id: TenantId,
    /// The user.
    pub user_id: UserId,
    /// The client.
    pub client_id: ClientId,
    /// The scopes consented to.
    pub scope: Scopes,
    /// When consent was last given.
    pub granted_at: DateTime<Utc>,
}

/// A login session at the provider (the browser's session cookie), stored by hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginSession {
    /// SHA-256 of the cookie value.
    pub id_hash: TokenHash,
    /// The signed-in user.
    pub user_id: UserId,
    /// When the user authenticated.
    pub auth_time: DateTime<Utc>,
    /// When the session ends.
    pub expires_at: DateTime<Utc>,
}
