//! The provider store conformance suite (features `conformance` and `oauth`): plain
//! async functions over [`OAuthStore`], [`SessionStore`], [`KeyStore`] and
//! [`RateLimiter`], run by every backend. Each expects an empty store (a rate limiter
//! may be shared: the functions use fresh keys) and panics when the store breaks the
//! contract documented on the traits in [`crate::oauth`] and [`crate::token`].

use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use futures_util::future::join_all;

use super::{assert_kind, collect_pages, now, unique};
use crate::error::ErrorKind;
use crate::identity::{SecretToken, TokenHash};
use crate::ids::{ClientId, GrantId, TenantId, UserId};
use crate::oauth::{
    AuthMethod, AuthorizationCode, Client, ClientKind, ClientScope, CodeRedemption, Consent, Grant,
    GrantType, LoginSession, OAuthStore, ProviderStore, Quota, RateDecision, RateLimiter,
    RedirectUri, RefreshRotation, RefreshToken, Scopes, SecretDigest, SessionStore,
};
use crate::token::{KeyRecord, KeyStore};

fn scopes(s: &str) -> Scopes {
    Scopes::parse(s).unwrap()
}

fn hash() -> TokenHash {
    SecretToken::generate().unwrap().hash()
}

/// A valid confidential client owned by `tenant` (`None`: a global client).
#[must_use]
pub fn sample_client(tenant: Option<TenantId>) -> Client {
    let t = now();
    Client {
        id: ClientId::new(),
        tenant_id: tenant,
        name: "Sample App".into(),
        kind: ClientKind::Confidential,
        auth_method: AuthMethod::ClientSecretBasic,
        secret_digest: Some(SecretDigest([7; 32])),
        jwks: None,
        redirect_uris: vec![RedirectUri::parse("https://app.example.com/callback").unwrap()],
        post_logout_redirect_uris: vec![RedirectUri::parse("https://app.example.com/").unwrap()],
        grant_types: vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
        scopes: scopes("openid profile email offline_access"),
        created_at: t,
        updated_at: t,
        version: 1,
    }
}

/// An unredeemed authorization code of `tenant` for `client`, valid for ten minutes.
#[must_use]
pub fn sample_code(tenant: TenantId, client: ClientId, grant: GrantId) -> AuthorizationCode {
    let t = now();
    AuthorizationCode {
        code_hash: hash(),
        tenant_id: tenant,
        client_id: client,
        user_id: UserId::new(),
        grant_id: grant,
        redirect_uri: "https://app.example.com/callback".into(),
        scope: scopes("openid profile"),
        nonce: Some("n-0S6_WzA2Mj".into()),
        code_challenge: Some("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into()),
        auth_time: t - Duration::seconds(5),
        issued_at: t,
        expires_at: t + Duration::minutes(10),
    }
}

/// A live grant of `tenant` by a new user to `client`.
#[must_use]
pub fn sample_grant(tenant: TenantId, client: ClientId) -> Grant {
    let t = now();
    Grant {
        id: GrantId::new(),
        tenant_id: tenant,
        client_id: client,
        user_id: Some(UserId::new()),
        scope: scopes("openid profile offline_access"),
        auth_time: Some(t - Duration::seconds(5)),
        created_at: t,
        revoked_at: None,
    }
}

/// An unused refresh token of `grant`, valid for thirty days.
#[must_use]
pub fn sample_refresh_token(grant: &Grant) -> RefreshToken {
    let t = now();
    RefreshToken {
        token_hash: hash(),
        tenant_id: grant.tenant_id,
        grant_id: grant.id,
        client_id: grant.client_id,
        scope: scopes("openid offline_access"),
        issued_at: t,
        expires_at: t + Duration::days(30),
        used_at: None,
    }
}

/// A login session of `user`, valid for an hour.
#[must_use]
pub fn sample_session(user: UserId) -> LoginSession {
    let t = now();
    LoginSession {
        id_hash: hash(),
        user_id: user,
        auth_time: t,
        expires_at: t + Duration::hours(1),
    }
}

/// A signing key record created at `created_at`.
#[must_use]
pub fn sample_key(kid: &str, created_at: DateTime<Utc>) -> KeyRecord {
    KeyRecord {
        kid: kid.to_owned(),
        alg: "ES256".into(),
        public_jwk: serde_json::json!({ "kty": "EC", "crv": "P-256", "kid": kid, "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0" }),
        sealed_private_key: vec![1, 2, 3, 4, 5, 6, 7, 8],
        created_at,
        activates_at: created_at + Duration::hours(1),
        retires_at: None,
        expires_at: None,
    }
}

fn consent(tenant: TenantId, user: UserId, client: ClientId, scope: &str) -> Consent {
    Consent {
        tenant_id: tenant,
        user_id: user,
        client_id: client,
        scope: scopes(scope),
        granted_at: now(),
    }
}

async fn clients_of(store: &dyn OAuthStore, scope: ClientScope) -> Vec<Client> {
    collect_pages(2, |p| async move { store.list_clients(scope, &p).await }).await
}

/// Clients: insert and read global and tenant clients, list per scope, update with
/// optimistic concurrency (stale: `Conflict`, exactly one of many concurrent writers
/// wins), and delete only through the owning scope.
pub async fn oauth_clients(store: &dyn OAuthStore) {
    let (a, b) = (TenantId::new(), TenantId::new());
    let global = sample_client(None);
    let mut public = sample_client(None);
    public.kind = ClientKind::Public;
    public.auth_method = AuthMethod::None;
    public.secret_digest = None;
    public.grant_types = vec![GrantType::AuthorizationCode];
    public.redirect_uris = vec![
        RedirectUri::parse("http://127.0.0.1/callback").unwrap(),
        RedirectUri::parse("com.example.app:/callback").unwrap(),
    ];
    public.post_logout_redirect_uris = Vec::new();
    let mut owned = vec![];
    for _ in 0..5 {
        let mut c = sample_client(Some(a));
        c.auth_method = AuthMethod::PrivateKeyJwt;
        c.secret_digest = None;
        c.jwks = Some(
            serde_json::json!({ "keys": [{ "kty": "EC", "crv": "P-256", "x": "AA", "y": "BB" }] }),
        );
        c.grant_types = vec![GrantType::ClientCredentials];
        owned.push(c);
    }
    let of_b = sample_client(Some(b));
    for c in [&global, &public, &of_b].into_iter().chain(&owned) {
        store.insert_client(c).await.unwrap();
    }
    for c in [&global, &public, &of_b].into_iter().chain(&owned) {
        assert_eq!(&store.client(c.id).await.unwrap(), c);
    }
    assert_kind(store.insert_client(&global).await, ErrorKind::AlreadyExists);
    let mut same_id = sample_client(Some(b));
    same_id.id = owned[0].id;
    assert_kind(
        store.insert_client(&same_id).await,
        ErrorKind::AlreadyExists,
    );
    assert_kind(store.client(ClientId::new()).await, ErrorKind::NotFound);

    let mut globals = vec![global.clone(), public.clone()];
    globals.sort_by_key(|c| c.id);
    assert_eq!(clients_of(store, ClientScope::Global).await, globals);
    assert_eq!(clients_of(store, ClientScope::Tenant(a)).await, owned);
    assert_eq!(
        clients_of(store, ClientScope::Tenant(b)).await,
        vec![of_b.clone()]
    );
    assert!(
        clients_of(store, ClientScope::Tenant(TenantId::new()))
            .await
            .is_empty()
    );

    // Update: version + 1, every field replaced.
    let mut changed = owned[0].clone();
    changed.name = "Renamed App".into();
    changed.auth_method = AuthMethod::ClientSecretPost;
    changed.secret_digest = Some(SecretDigest([9; 32]));
    changed.jwks = None;
    changed
        .redirect_uris
        .push(RedirectUri::parse("https://app.example.com/other").unwrap());
    changed.grant_types = vec![GrantType::AuthorizationCode, GrantType::ClientCredentials];
    changed.scopes = scopes("openid api:read");
    changed.updated_at = now() + Duration::seconds(1);
    let updated = store
        .update_client(ClientScope::Tenant(a), &changed)
        .await
        .unwrap();
    assert_eq!(updated.version, 2);
    let mut expected = changed.clone();
    expected.version = 2;
    assert_eq!(updated, expected);
    assert_eq!(store.client(changed.id).await.unwrap(), expected);
    let mut stale = owned[0].clone();
    stale.name = "Stale".into();
    assert_kind(
        store.update_client(ClientScope::Tenant(a), &stale).await,
        ErrorKind::Conflict,
    );
    assert_eq!(store.client(changed.id).await.unwrap().name, "Renamed App");
    assert_kind(
        store
            .update_client(ClientScope::Tenant(a), &sample_client(Some(a)))
            .await,
        ErrorKind::NotFound,
    );

    // A global client is updated through the global scope only.
    let mut g = global.clone();
    g.name = "Global Renamed".into();
    assert_kind(
        store.update_client(ClientScope::Tenant(a), &g).await,
        ErrorKind::InvalidInput,
    );
    assert_eq!(
        store
            .update_client(ClientScope::Global, &g)
            .await
            .unwrap()
            .version,
        2
    );

    // Many writers from one version: exactly one wins.
    let base = store.client(owned[1].id).await.unwrap();
    let results = join_all((0..8).map(|i| {
        let mut c = base.clone();
        c.name = format!("Writer {i}");
        async move { store.update_client(ClientScope::Tenant(a), &c).await }
    }))
    .await;
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    for e in results.into_iter().filter_map(Result::err) {
        assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    }
    assert_eq!(
        store.client(base.id).await.unwrap().version,
        base.version + 1
    );

    // Delete: only through the owning scope.
    assert_kind(
        store
            .delete_client(ClientScope::Tenant(b), owned[2].id)
            .await,
        ErrorKind::NotFound,
    );
    assert_kind(
        store.delete_client(ClientScope::Global, owned[2].id).await,
        ErrorKind::NotFound,
    );
    assert_kind(
        store.delete_client(ClientScope::Tenant(a), global.id).await,
        ErrorKind::NotFound,
    );
    store
        .delete_client(ClientScope::Tenant(a), owned[2].id)
        .await
        .unwrap();
    assert_kind(store.client(owned[2].id).await, ErrorKind::NotFound);
    assert_kind(
        store
            .delete_client(ClientScope::Tenant(a), owned[2].id)
            .await,
        ErrorKind::NotFound,
    );
    store
        .delete_client(ClientScope::Global, public.id)
        .await
        .unwrap();
    assert_eq!(
        clients_of(store, ClientScope::Global)
            .await
            .iter()
            .map(|c| c.id)
            .collect::<Vec<_>>(),
        vec![global.id]
    );
    assert_eq!(clients_of(store, ClientScope::Tenant(a)).await.len(), 4);
    // The id of a deleted client can be registered again.
    store.insert_client(&owned[2]).await.unwrap();
    assert_eq!(store.client(owned[2].id).await.unwrap(), owned[2]);
}

/// Authorization codes: redeemed exactly once (also under a race of 16 concurrent
/// redemptions), `AlreadyRedeemed` afterwards with the code, `Unknown` for no such code;
/// writes naming another tenant, an unknown client or a taken hash are refused.
pub async fn oauth_codes(store: &dyn OAuthStore) {
    let tenant = TenantId::new();
    let client = sample_client(Some(tenant));
    store.insert_client(&client).await.unwrap();
    let code = sample_code(tenant, client.id, GrantId::new());
    store.insert_code(tenant, &code).await.unwrap();
    assert_kind(
        store.insert_code(tenant, &code).await,
        ErrorKind::AlreadyExists,
    );
    assert_kind(
        store.insert_code(TenantId::new(), &code).await,
        ErrorKind::InvalidInput,
    );
    let orphan = sample_code(tenant, ClientId::new(), GrantId::new());
    assert_kind(
        store.insert_code(tenant, &orphan).await,
        ErrorKind::NotFound,
    );
    assert_eq!(
        store.redeem_code(tenant, &orphan.code_hash).await.unwrap(),
        CodeRedemption::Unknown
    );

    assert_eq!(
        store.redeem_code(tenant, &code.code_hash).await.unwrap(),
        CodeRedemption::Redeemed(code.clone())
    );
    for _ in 0..2 {
        assert_eq!(
            store.redeem_code(tenant, &code.code_hash).await.unwrap(),
            CodeRedemption::AlreadyRedeemed(code.clone())
        );
    }
    assert_eq!(
        store.redeem_code(tenant, &hash()).await.unwrap(),
        CodeRedemption::Unknown
    );

    // A code without nonce or PKCE challenge round-trips too.
    let mut bare = sample_code(tenant, client.id, GrantId::new());
    bare.nonce = None;
    bare.code_challenge = None;
    bare.scope = Scopes::default();
    store.insert_code(tenant, &bare).await.unwrap();
    assert_eq!(
        store.redeem_code(tenant, &bare.code_hash).await.unwrap(),
        CodeRedemption::Redeemed(bare)
    );

    let race = sample_code(tenant, client.id, GrantId::new());
    store.insert_code(tenant, &race).await.unwrap();
    let results = join_all((0..16).map(|_| store.redeem_code(tenant, &race.code_hash))).await;
    let results: Vec<CodeRedemption> = results.into_iter().map(Result::unwrap).collect();
    let won = results
        .iter()
        .filter(|r| matches!(r, CodeRedemption::Redeemed(_)))
        .count();
    assert_eq!(
        won, 1,
        "exactly one concurrent redemption must win: {results:?}"
    );
    for r in &results {
        match r {
            CodeRedemption::Redeemed(c) | CodeRedemption::AlreadyRedeemed(c) => {
                assert_eq!(c, &race)
            }
            CodeRedemption::Unknown => panic!("a stored code must not be unknown"),
        }
    }
}

/// Grants and refresh tokens: rotation spends the old token and stores the new one in
/// one step; a replay stores nothing; of 16 concurrent rotations exactly one wins;
/// revoking a grant keeps the earliest time and makes every token of it unusable.
pub async fn oauth_refresh_tokens(store: &dyn OAuthStore) {
    let tenant = TenantId::new();
    let client = sample_client(None);
    store.insert_client(&client).await.unwrap();
    let grant = sample_grant(tenant, client.id);
    store.insert_grant(tenant, &grant).await.unwrap();
    assert_eq!(store.grant(tenant, grant.id).await.unwrap(), grant);
    assert_kind(
        store.insert_grant(tenant, &grant).await,
        ErrorKind::AlreadyExists,
    );
    assert_kind(
        store.insert_grant(TenantId::new(), &grant).await,
        ErrorKind::InvalidInput,
    );
    assert_kind(
        store.grant(tenant, GrantId::new()).await,
        ErrorKind::NotFound,
    );
    assert_kind(
        store
            .insert_grant(tenant, &sample_grant(tenant, ClientId::new()))
            .await,
        ErrorKind::NotFound,
    );
    let mut machine = sample_grant(tenant, client.id);
    machine.user_id = None;
    machine.auth_time = None;
    store.insert_grant(tenant, &machine).await.unwrap();
    assert_eq!(store.grant(tenant, machine.id).await.unwrap(), machine);

    let first = sample_refresh_token(&grant);
    store.insert_refresh_token(tenant, &first).await.unwrap();
    assert_eq!(
        store
            .refresh_token(tenant, &first.token_hash)
            .await
            .unwrap(),
        first
    );
    assert_kind(
        store.insert_refresh_token(tenant, &first).await,
        ErrorKind::AlreadyExists,
    );
    assert_kind(
        store.insert_refresh_token(TenantId::new(), &first).await,
        ErrorKind::InvalidInput,
    );
    let mut orphan = sample_refresh_token(&grant);
    orphan.grant_id = GrantId::new();
    assert_kind(
        store.insert_refresh_token(tenant, &orphan).await,
        ErrorKind::NotFound,
    );
    assert_kind(
        store.refresh_token(tenant, &hash()).await,
        ErrorKind::NotFound,
    );

    // Rotate: the old one is spent, the new one stored.
    let at = now();
    let second = sample_refresh_token(&grant);
    let mut spent = first.clone();
    spent.used_at = Some(at);
    assert_eq!(
        store
            .rotate_refresh_token(tenant, &first.token_hash, &second, at)
            .await
            .unwrap(),
        RefreshRotation::Rotated(spent.clone())
    );
    assert_eq!(
        store
            .refresh_token(tenant, &first.token_hash)
            .await
            .unwrap(),
        spent
    );
    assert_eq!(
        store
            .refresh_token(tenant, &second.token_hash)
            .await
            .unwrap(),
        second
    );

    // Replay: nothing is stored.
    let third = sample_refresh_token(&grant);
    assert_eq!(
        store
            .rotate_refresh_token(tenant, &first.token_hash, &third, now())
            .await
            .unwrap(),
        RefreshRotation::Replayed(spent.clone())
    );
    assert_kind(
        store.refresh_token(tenant, &third.token_hash).await,
        ErrorKind::NotFound,
    );
    assert_eq!(
        store
            .rotate_refresh_token(tenant, &hash(), &third, now())
            .await
            .unwrap(),
        RefreshRotation::Unknown
    );
    assert_kind(
        store.refresh_token(tenant, &third.token_hash).await,
        ErrorKind::NotFound,
    );

    // A replacement outside the family, or for another tenant, is refused and spends nothing.
    let mut stray = sample_refresh_token(&machine);
    assert_kind(
        store
            .rotate_refresh_token(tenant, &second.token_hash, &stray, now())
            .await,
        ErrorKind::InvalidInput,
    );
    stray = sample_refresh_token(&grant);
    stray.tenant_id = TenantId::new();
    assert_kind(
        store
            .rotate_refresh_token(tenant, &second.token_hash, &stray, now())
            .await,
        ErrorKind::InvalidInput,
    );
    // A replacement whose hash is taken fails and spends nothing.
    assert_kind(
        store
            .rotate_refresh_token(tenant, &second.token_hash, &first, now())
            .await,
        ErrorKind::AlreadyExists,
    );
    assert!(
        store
            .refresh_token(tenant, &second.token_hash)
            .await
            .unwrap()
            .used_at
            .is_none()
    );

    // A race of rotations of one token: exactly one wins, one replacement is stored.
    let replacements: Vec<RefreshToken> = (0..16).map(|_| sample_refresh_token(&grant)).collect();
    let at = now();
    let results = join_all(
        replacements
            .iter()
            .map(|new| store.rotate_refresh_token(tenant, &second.token_hash, new, at)),
    )
    .await;
    let results: Vec<RefreshRotation> = results.into_iter().map(Result::unwrap).collect();
    let won = results
        .iter()
        .filter(|r| matches!(r, RefreshRotation::Rotated(_)))
        .count();
    assert_eq!(
        won, 1,
        "exactly one concurrent rotation must win: {results:?}"
    );
    assert!(
        results
            .iter()
            .all(|r| !matches!(r, RefreshRotation::Unknown))
    );
    let mut live = Vec::new();
    for new in &replacements {
        if let Ok(t) = store.refresh_token(tenant, &new.token_hash).await {
            live.push(t);
        }
    }
    assert_eq!(live.len(), 1, "exactly one replacement must be stored");
    let live = live.remove(0);
    assert!(live.used_at.is_none());

    // Revoking the grant blocks its refresh tokens; an earlier revocation time is kept.
    let revoked_at = now();
    store
        .revoke_grant(tenant, grant.id, revoked_at)
        .await
        .unwrap();
    store
        .revoke_grant(tenant, grant.id, revoked_at + Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(
        store.grant(tenant, grant.id).await.unwrap().revoked_at,
        Some(revoked_at)
    );
    let earlier = revoked_at - Duration::seconds(30);
    store.revoke_grant(tenant, grant.id, earlier).await.unwrap();
    assert_eq!(
        store.grant(tenant, grant.id).await.unwrap().revoked_at,
        Some(earlier)
    );
    let blocked = store.refresh_token(tenant, &live.token_hash).await.unwrap();
    assert!(
        blocked.used_at.is_some(),
        "a revoked grant's token must be unusable"
    );
    let after = sample_refresh_token(&grant);
    assert!(matches!(
        store
            .rotate_refresh_token(tenant, &live.token_hash, &after, now())
            .await
            .unwrap(),
        RefreshRotation::Replayed(_)
    ));
    assert_kind(
        store.refresh_token(tenant, &after.token_hash).await,
        ErrorKind::NotFound,
    );
    assert_kind(
        store.revoke_grant(tenant, GrantId::new(), now()).await,
        ErrorKind::NotFound,
    );
    // The other grant is untouched.
    assert_eq!(store.grant(tenant, machine.id).await.unwrap(), machine);

    // Rotations racing a revocation of their grant never leave a usable token behind.
    let family = sample_grant(tenant, client.id);
    store.insert_grant(tenant, &family).await.unwrap();
    let root = sample_refresh_token(&family);
    store.insert_refresh_token(tenant, &root).await.unwrap();
    let replacements: Vec<RefreshToken> = (0..8).map(|_| sample_refresh_token(&family)).collect();
    let at = now();
    let rotations = join_all(
        replacements
            .iter()
            .map(|new| store.rotate_refresh_token(tenant, &root.token_hash, new, at)),
    );
    let (rotations, revoked) =
        futures_util::future::join(rotations, store.revoke_grant(tenant, family.id, at)).await;
    revoked.unwrap();
    for r in rotations {
        assert!(!matches!(r.unwrap(), RefreshRotation::Unknown));
    }
    for token in replacements.iter().chain([&root]) {
        if let Ok(stored) = store.refresh_token(tenant, &token.token_hash).await {
            assert!(
                stored.used_at.is_some(),
                "a token of a revoked grant must be spent"
            );
        }
    }
}

/// Consents: absent, remembered, replaced, forgotten (twice without error); a consent
/// naming another tenant or an unknown client is refused.
pub async fn oauth_consents(store: &dyn OAuthStore) {
    let tenant = TenantId::new();
    let client = sample_client(Some(tenant));
    store.insert_client(&client).await.unwrap();
    let user = UserId::new();
    assert_eq!(store.consent(tenant, user, client.id).await.unwrap(), None);
    let first = consent(tenant, user, client.id, "openid profile");
    store.put_consent(tenant, &first).await.unwrap();
    assert_eq!(
        store.consent(tenant, user, client.id).await.unwrap(),
        Some(first.clone())
    );
    let mut wider = consent(tenant, user, client.id, "openid profile email");
    wider.granted_at = first.granted_at + Duration::minutes(1);
    store.put_consent(tenant, &wider).await.unwrap();
    assert_eq!(
        store.consent(tenant, user, client.id).await.unwrap(),
        Some(wider.clone())
    );
    let other = consent(tenant, UserId::new(), client.id, "openid");
    store.put_consent(tenant, &other).await.unwrap();
    assert_kind(
        store.put_consent(TenantId::new(), &other).await,
        ErrorKind::InvalidInput,
    );
    assert_kind(
        store
            .put_consent(tenant, &consent(tenant, user, ClientId::new(), "openid"))
            .await,
        ErrorKind::NotFound,
    );
    store.delete_consent(tenant, user, client.id).await.unwrap();
    store.delete_consent(tenant, user, client.id).await.unwrap();
    assert_eq!(store.consent(tenant, user, client.id).await.unwrap(), None);
    assert_eq!(
        store
            .consent(tenant, other.user_id, client.id)
            .await
            .unwrap(),
        Some(other)
    );
}

/// Revoked access tokens are remembered (idempotently); client assertion ids are
/// accepted once per client, also under a race of 16 concurrent uses.
pub async fn oauth_revocations(store: &dyn OAuthStore) {
    let tenant = TenantId::new();
    let jti = unique("jti");
    assert!(!store.is_access_token_revoked(tenant, &jti).await.unwrap());
    let exp = now() + Duration::minutes(15);
    store.revoke_access_token(tenant, &jti, exp).await.unwrap();
    store.revoke_access_token(tenant, &jti, exp).await.unwrap();
    assert!(store.is_access_token_revoked(tenant, &jti).await.unwrap());
    assert!(
        !store
            .is_access_token_revoked(tenant, &unique("jti"))
            .await
            .unwrap()
    );

    let client = sample_client(None);
    store.insert_client(&client).await.unwrap();
    let other = sample_client(None);
    store.insert_client(&other).await.unwrap();
    let jti = unique("assertion");
    let exp = now() + Duration::minutes(5);
    assert!(store.record_assertion(client.id, &jti, exp).await.unwrap());
    assert!(!store.record_assertion(client.id, &jti, exp).await.unwrap());
    assert!(store.record_assertion(other.id, &jti, exp).await.unwrap());

    let race = unique("race");
    let results = join_all((0..16).map(|_| store.record_assertion(client.id, &race, exp))).await;
    let firsts = results
        .into_iter()
        .map(Result::unwrap)
        .filter(|first| *first)
        .count();
    assert_eq!(
        firsts, 1,
        "exactly one concurrent use of an assertion id must be first"
    );
}

/// `purge_expired` deletes codes, refresh tokens, revocations and assertion records
/// that expired before `now`, in every tenant, and keeps the rest (grants included).
pub async fn oauth_purge(store: &dyn OAuthStore) {
    let client = sample_client(None);
    store.insert_client(&client).await.unwrap();
    let t = now();
    let expired = t - Duration::milliseconds(1);
    let mut survivors = Vec::new();
    let mut gone = 0;
    for tenant in [TenantId::new(), TenantId::new()] {
        let grant = sample_grant(tenant, client.id);
        store.insert_grant(tenant, &grant).await.unwrap();
        let mut old_code = sample_code(tenant, client.id, grant.id);
        old_code.expires_at = expired;
        let live_code = sample_code(tenant, client.id, grant.id);
        let mut old_token = sample_refresh_token(&grant);
        old_token.expires_at = expired;
        let mut boundary = sample_refresh_token(&grant);
        boundary.expires_at = t;
        for code in [&old_code, &live_code] {
            store.insert_code(tenant, code).await.unwrap();
        }
        for token in [&old_token, &boundary] {
            store.insert_refresh_token(tenant, token).await.unwrap();
        }
        store
            .revoke_access_token(tenant, "old-jti", expired)
            .await
            .unwrap();
        store
            .revoke_access_token(tenant, "live-jti", t + Duration::minutes(5))
            .await
            .unwrap();
        gone += 3;
        survivors.push((tenant, grant, old_code, live_code, old_token, boundary));
    }
    assert!(
        store
            .record_assertion(client.id, "old", expired)
            .await
            .unwrap()
    );
    assert!(
        store
            .record_assertion(client.id, "live", t + Duration::minutes(5))
            .await
            .unwrap()
    );
    gone += 1;

    assert_eq!(store.purge_expired(t).await.unwrap(), gone);
    assert_eq!(store.purge_expired(t).await.unwrap(), 0);
    for (tenant, grant, old_code, live_code, old_token, boundary) in survivors {
        assert_eq!(store.grant(tenant, grant.id).await.unwrap(), grant);
        assert_eq!(
            store
                .redeem_code(tenant, &old_code.code_hash)
                .await
                .unwrap(),
            CodeRedemption::Unknown
        );
        assert_eq!(
            store
                .redeem_code(tenant, &live_code.code_hash)
                .await
                .unwrap(),
            CodeRedemption::Redeemed(live_code)
        );
        assert_kind(
            store.refresh_token(tenant, &old_token.token_hash).await,
            ErrorKind::NotFound,
        );
        assert_eq!(
            store
                .refresh_token(tenant, &boundary.token_hash)
                .await
                .unwrap(),
            boundary
        );
        assert!(
            !store
                .is_access_token_revoked(tenant, "old-jti")
                .await
                .unwrap()
        );
        assert!(
            store
                .is_access_token_revoked(tenant, "live-jti")
                .await
                .unwrap()
        );
    }
    // A purged assertion id may be used again; a live one may not.
    assert!(
        store
            .record_assertion(client.id, "old", t + Duration::minutes(5))
            .await
            .unwrap()
    );
    assert!(
        !store
            .record_assertion(client.id, "live", t + Duration::minutes(5))
            .await
            .unwrap()
    );
}

/// Two tenants hold the same code hash, refresh-token hash, grant id, consent key and
/// revoked token id: each sees and changes only its own; a handle of tenant A is
/// `Unknown`/`NotFound` through tenant B, and writes naming A through B are refused.
pub async fn oauth_tenant_isolation(store: &dyn OAuthStore) {
    let (a, b) = (TenantId::new(), TenantId::new());
    let shared = sample_client(None);
    store.insert_client(&shared).await.unwrap();
    let own_a = sample_client(Some(a));
    store.insert_client(&own_a).await.unwrap();

    // The same ids in both tenants, with different contents.
    let grant_a = sample_grant(a, shared.id);
    let mut grant_b = grant_a.clone();
    grant_b.tenant_id = b;
    grant_b.scope = scopes("openid");
    let code_a = sample_code(a, shared.id, grant_a.id);
    let mut code_b = code_a.clone();
    code_b.tenant_id = b;
    code_b.redirect_uri = "https://b.example.com/callback".into();
    let token_a = sample_refresh_token(&grant_a);
    let mut token_b = sample_refresh_token(&grant_b);
    token_b.token_hash = token_a.token_hash;
    let user = UserId::new();
    let consent_a = consent(a, user, shared.id, "openid profile");
    let consent_b = consent(b, user, shared.id, "openid");
    for (tenant, grant, code, token, consent) in [
        (a, &grant_a, &code_a, &token_a, &consent_a),
        (b, &grant_b, &code_b, &token_b, &consent_b),
    ] {
        store.insert_grant(tenant, grant).await.unwrap();
        store.insert_code(tenant, code).await.unwrap();
        store.insert_refresh_token(tenant, token).await.unwrap();
        store.put_consent(tenant, consent).await.unwrap();
    }
    assert_eq!(store.grant(a, grant_a.id).await.unwrap(), grant_a);
    assert_eq!(store.grant(b, grant_a.id).await.unwrap(), grant_b);
    assert_eq!(
        store.refresh_token(a, &token_a.token_hash).await.unwrap(),
        token_a
    );
    assert_eq!(
        store.refresh_token(b, &token_a.token_hash).await.unwrap(),
        token_b
    );
    assert_eq!(
        store.consent(a, user, shared.id).await.unwrap(),
        Some(consent_a.clone())
    );
    assert_eq!(
        store.consent(b, user, shared.id).await.unwrap(),
        Some(consent_b.clone())
    );

    // Redeeming, rotating, revoking in A leaves B's rows as they were.
    assert_eq!(
        store.redeem_code(a, &code_a.code_hash).await.unwrap(),
        CodeRedemption::Redeemed(code_a.clone())
    );
    assert_eq!(
        store.redeem_code(b, &code_a.code_hash).await.unwrap(),
        CodeRedemption::Redeemed(code_b.clone())
    );
    let next_a = sample_refresh_token(&grant_a);
    assert!(matches!(
        store
            .rotate_refresh_token(a, &token_a.token_hash, &next_a, now())
            .await
            .unwrap(),
        RefreshRotation::Rotated(_)
    ));
    assert_eq!(
        store.refresh_token(b, &token_a.token_hash).await.unwrap(),
        token_b
    );
    store.revoke_grant(a, grant_a.id, now()).await.unwrap();
    assert_eq!(store.grant(b, grant_a.id).await.unwrap(), grant_b);
    assert_eq!(
        store.refresh_token(b, &token_b.token_hash).await.unwrap(),
        token_b
    );
    store.delete_consent(a, user, shared.id).await.unwrap();
    assert_eq!(
        store.consent(b, user, shared.id).await.unwrap(),
        Some(consent_b)
    );
    store
        .revoke_access_token(a, "shared-jti", now() + Duration::minutes(5))
        .await
        .unwrap();
    assert!(
        !store
            .is_access_token_revoked(b, "shared-jti")
            .await
            .unwrap()
    );

    // Handles only A has are unknown through B, and stay usable in A.
    let grant_only = sample_grant(a, own_a.id);
    store.insert_grant(a, &grant_only).await.unwrap();
    let code_only = sample_code(a, own_a.id, grant_only.id);
    store.insert_code(a, &code_only).await.unwrap();
    let token_only = sample_refresh_token(&grant_only);
    store.insert_refresh_token(a, &token_only).await.unwrap();
    store
        .put_consent(a, &consent(a, user, own_a.id, "openid"))
        .await
        .unwrap();
    assert_eq!(
        store.redeem_code(b, &code_only.code_hash).await.unwrap(),
        CodeRedemption::Unknown
    );
    assert_kind(store.grant(b, grant_only.id).await, ErrorKind::NotFound);
    assert_kind(
        store.revoke_grant(b, grant_only.id, now()).await,
        ErrorKind::NotFound,
    );
    assert_kind(
        store.refresh_token(b, &token_only.token_hash).await,
        ErrorKind::NotFound,
    );
    let mut through_b = sample_refresh_token(&grant_only);
    through_b.tenant_id = b;
    assert_eq!(
        store
            .rotate_refresh_token(b, &token_only.token_hash, &through_b, now())
            .await
            .unwrap(),
        RefreshRotation::Unknown
    );
    assert_kind(
        store.refresh_token(b, &through_b.token_hash).await,
        ErrorKind::NotFound,
    );
    assert_eq!(store.consent(b, user, own_a.id).await.unwrap(), None);
    assert_eq!(
        store.redeem_code(a, &code_only.code_hash).await.unwrap(),
        CodeRedemption::Redeemed(code_only.clone())
    );
    assert_eq!(
        store.grant(a, grant_only.id).await.unwrap().revoked_at,
        None
    );
    assert!(
        store
            .refresh_token(a, &token_only.token_hash)
            .await
            .unwrap()
            .used_at
            .is_none()
    );
    assert!(store.consent(a, user, own_a.id).await.unwrap().is_some());

    // Records naming A written through B are refused.
    assert_kind(
        store
            .insert_code(b, &sample_code(a, shared.id, grant_a.id))
            .await,
        ErrorKind::InvalidInput,
    );
    assert_kind(
        store.insert_grant(b, &sample_grant(a, shared.id)).await,
        ErrorKind::InvalidInput,
    );
    assert_kind(
        store
            .insert_refresh_token(b, &sample_refresh_token(&grant_a))
            .await,
        ErrorKind::InvalidInput,
    );
    assert_kind(
        store
            .put_consent(b, &consent(a, user, shared.id, "openid"))
            .await,
        ErrorKind::InvalidInput,
    );
    assert_kind(
        store
            .rotate_refresh_token(
                b,
                &token_b.token_hash,
                &sample_refresh_token(&grant_a),
                now(),
            )
            .await,
        ErrorKind::InvalidInput,
    );
    assert!(
        store
            .refresh_token(b, &token_b.token_hash)
            .await
            .unwrap()
            .used_at
            .is_none()
    );

    // A's own client is not B's to list, change or delete.
    assert!(clients_of(store, ClientScope::Tenant(b)).await.is_empty());
    let mut renamed = own_a.clone();
    renamed.name = "Hijacked".into();
    assert_kind(
        store.update_client(ClientScope::Tenant(b), &renamed).await,
        ErrorKind::InvalidInput,
    );
    renamed.tenant_id = Some(b);
    assert_kind(
        store.update_client(ClientScope::Tenant(b), &renamed).await,
        ErrorKind::NotFound,
    );
    assert_kind(
        store.delete_client(ClientScope::Tenant(b), own_a.id).await,
        ErrorKind::NotFound,
    );
    assert_eq!(store.client(own_a.id).await.unwrap(), own_a);
}

/// Deleting a client deletes its codes, grants, refresh tokens, consents and assertion
/// records in every tenant, and nothing of other clients.
pub async fn oauth_delete_client(store: &dyn OAuthStore) {
    let (a, b) = (TenantId::new(), TenantId::new());
    let doomed = sample_client(None);
    let kept = sample_client(None);
    store.insert_client(&doomed).await.unwrap();
    store.insert_client(&kept).await.unwrap();
    let user = UserId::new();
    let mut rows = Vec::new();
    for tenant in [a, b] {
        for client in [&doomed, &kept] {
            let grant = sample_grant(tenant, client.id);
            store.insert_grant(tenant, &grant).await.unwrap();
            let code = sample_code(tenant, client.id, grant.id);
            store.insert_code(tenant, &code).await.unwrap();
            let token = sample_refresh_token(&grant);
            store.insert_refresh_token(tenant, &token).await.unwrap();
            store
                .put_consent(tenant, &consent(tenant, user, client.id, "openid"))
                .await
                .unwrap();
            rows.push((tenant, client.id, grant, code, token));
        }
    }
    let exp = now() + Duration::minutes(5);
    assert!(
        store
            .record_assertion(doomed.id, "jti-1", exp)
            .await
            .unwrap()
    );
    assert!(store.record_assertion(kept.id, "jti-1", exp).await.unwrap());

    store
        .delete_client(ClientScope::Global, doomed.id)
        .await
        .unwrap();
    assert_kind(store.client(doomed.id).await, ErrorKind::NotFound);
    for (tenant, client, grant, code, token) in rows {
        let consent = store.consent(tenant, user, client).await.unwrap();
        if client == doomed.id {
            assert_kind(store.grant(tenant, grant.id).await, ErrorKind::NotFound);
            assert_eq!(
                store.redeem_code(tenant, &code.code_hash).await.unwrap(),
                CodeRedemption::Unknown
            );
            assert_kind(
                store.refresh_token(tenant, &token.token_hash).await,
                ErrorKind::NotFound,
            );
            assert_eq!(consent, None);
        } else {
            assert_eq!(store.grant(tenant, grant.id).await.unwrap(), grant);
            assert_eq!(
                store.redeem_code(tenant, &code.code_hash).await.unwrap(),
                CodeRedemption::Redeemed(code)
            );
            assert_eq!(
                store
                    .refresh_token(tenant, &token.token_hash)
                    .await
                    .unwrap(),
                token
            );
            assert!(consent.is_some());
        }
    }
    // Re-registered under the same id, the client starts with a clean slate.
    store.insert_client(&doomed).await.unwrap();
    assert!(
        store
            .record_assertion(doomed.id, "jti-1", exp)
            .await
            .unwrap()
    );
    assert!(!store.record_assertion(kept.id, "jti-1", exp).await.unwrap());
}

/// Login sessions: found until they expire, ended one by one or all of a user's at once.
pub async fn login_sessions(store: &dyn SessionStore) {
    let (user, other) = (UserId::new(), UserId::new());
    let first = sample_session(user);
    let second = sample_session(user);
    let third = sample_session(other);
    for s in [&first, &second, &third] {
        store.insert_session(s).await.unwrap();
    }
    assert_kind(store.insert_session(&first).await, ErrorKind::AlreadyExists);
    let t = now();
    assert_eq!(
        store.session(&first.id_hash, t).await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(
        store
            .session(&first.id_hash, first.expires_at - Duration::microseconds(1))
            .await
            .unwrap(),
        Some(first.clone())
    );
    assert_eq!(
        store
            .session(&first.id_hash, first.expires_at)
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.session(&hash(), t).await.unwrap(), None);

    store.delete_session(&first.id_hash).await.unwrap();
    store.delete_session(&first.id_hash).await.unwrap();
    assert_eq!(store.session(&first.id_hash, t).await.unwrap(), None);
    assert_eq!(store.delete_user_sessions(user).await.unwrap(), 1);
    assert_eq!(store.session(&second.id_hash, t).await.unwrap(), None);
    assert_eq!(store.delete_user_sessions(user).await.unwrap(), 0);
    assert_eq!(
        store.session(&third.id_hash, t).await.unwrap(),
        Some(third.clone())
    );

    // A user's sessions all go at once, however many.
    let many: Vec<LoginSession> = (0..5).map(|_| sample_session(other)).collect();
    for s in &many {
        store.insert_session(s).await.unwrap();
    }
    assert_eq!(store.delete_user_sessions(other).await.unwrap(), 6);
    for s in many.iter().chain([&third]) {
        assert_eq!(store.session(&s.id_hash, t).await.unwrap(), None);
    }
}

/// `purge_expired` of a backend that keeps both also deletes expired login sessions.
pub async fn provider_purge(store: &dyn ProviderStore) {
    let user = UserId::new();
    let t = now();
    let mut old = sample_session(user);
    old.expires_at = t - Duration::seconds(1);
    let live = sample_session(user);
    store.insert_session(&old).await.unwrap();
    store.insert_session(&live).await.unwrap();
    assert_eq!(store.purge_expired(t).await.unwrap(), 1);
    assert_eq!(store.session(&live.id_hash, t).await.unwrap(), Some(live));
    assert_eq!(store.delete_user_sessions(user).await.unwrap(), 1);
}

/// Signing keys: listed oldest first, unique by `kid`, activated and retired by `kid`
/// (`NotFound` otherwise), purged once expired.
pub async fn signing_keys(store: &dyn KeyStore) {
    let t = now();
    let older = sample_key("key-older", t - Duration::days(1));
    let mut newer = sample_key("key-newer", t);
    newer.alg = "EdDSA".into();
    newer.public_jwk = serde_json::json!({ "kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo" });
    store.insert_key(&newer).await.unwrap();
    store.insert_key(&older).await.unwrap();
    assert_eq!(
        store.keys().await.unwrap(),
        vec![older.clone(), newer.clone()]
    );
    assert_kind(store.insert_key(&older).await, ErrorKind::AlreadyExists);

    let soon = t + Duration::minutes(1);
    store.activate_key(&newer.kid, soon).await.unwrap();
    assert_kind(
        store.activate_key("no-such-key", soon).await,
        ErrorKind::NotFound,
    );
    let (retires, expires) = (t + Duration::minutes(1), t + Duration::hours(2));
    store
        .retire_key(&older.kid, retires, expires)
        .await
        .unwrap();
    assert_kind(
        store.retire_key("no-such-key", retires, expires).await,
        ErrorKind::NotFound,
    );
    let keys = store.keys().await.unwrap();
    let mut expected_older = older.clone();
    expected_older.retires_at = Some(retires);
    expected_older.expires_at = Some(expires);
    let mut expected_newer = newer.clone();
    expected_newer.activates_at = soon;
    assert_eq!(keys, vec![expected_older, expected_newer.clone()]);

    assert_eq!(store.purge_keys(expires).await.unwrap(), 0);
    assert_eq!(
        store
            .purge_keys(expires + Duration::seconds(1))
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.keys().await.unwrap(), vec![expected_newer]);
    // A purged kid may be stored again.
    store.insert_key(&older).await.unwrap();
    assert_eq!(store.keys().await.unwrap().len(), 2);
}

/// The GCRA limiter: a burst passes, the next request is refused with the time to the
/// next slot, slots refill with time, `reset` forgets a key, keys are independent, bad
/// quotas are refused, and concurrent checks never let more than the burst through.
pub async fn rate_limiter(limiter: &dyn RateLimiter) {
    let quota = Quota {
        burst: 5,
        period: StdDuration::from_secs(10),
    };
    let interval = StdDuration::from_secs(2);
    let key = unique("rate");
    let other = unique("rate");
    let t0 = now();
    let at = |d: StdDuration| t0 + Duration::from_std(d).unwrap();
    // Peeking counts nothing.
    for _ in 0..10 {
        assert_eq!(
            limiter.peek(&key, quota, t0).await.unwrap(),
            RateDecision::Allowed
        );
    }
    for i in 0..5 {
        assert_eq!(
            limiter.check(&key, quota, t0).await.unwrap(),
            RateDecision::Allowed,
            "request {i}"
        );
    }
    assert_eq!(
        limiter.peek(&key, quota, t0).await.unwrap(),
        RateDecision::Limited {
            retry_after: interval
        }
    );
    assert_eq!(
        limiter.check(&key, quota, t0).await.unwrap(),
        RateDecision::Limited {
            retry_after: interval
        }
    );
    // A refused request is not counted.
    assert_eq!(
        limiter
            .check(&key, quota, at(StdDuration::from_millis(500)))
            .await
            .unwrap(),
        RateDecision::Limited {
            retry_after: StdDuration::from_millis(1500)
        }
    );
    assert_eq!(
        limiter.check(&other, quota, t0).await.unwrap(),
        RateDecision::Allowed
    );
    // One slot refills per interval.
    assert_eq!(
        limiter.check(&key, quota, at(interval)).await.unwrap(),
        RateDecision::Allowed
    );
    match limiter.check(&key, quota, at(interval)).await.unwrap() {
        RateDecision::Limited { retry_after } => {
            assert!(
                retry_after > StdDuration::ZERO && retry_after <= interval,
                "{retry_after:?}"
            );
        }
        RateDecision::Allowed => panic!("a sixth request within the interval must be refused"),
    }
    // After a full period the whole burst is back.
    let later = at(StdDuration::from_secs(12));
    for _ in 0..5 {
        assert_eq!(
            limiter.check(&key, quota, later).await.unwrap(),
            RateDecision::Allowed
        );
    }
    assert!(matches!(
        limiter.check(&key, quota, later).await.unwrap(),
        RateDecision::Limited { .. }
    ));
    limiter.reset(&key).await.unwrap();
    limiter.reset(&unique("never-used")).await.unwrap();
    for _ in 0..5 {
        assert_eq!(
            limiter.check(&key, quota, later).await.unwrap(),
            RateDecision::Allowed
        );
    }

    let zero = Quota {
        burst: 0,
        period: StdDuration::from_secs(1),
    };
    assert_kind(limiter.check(&key, zero, t0).await, ErrorKind::InvalidInput);

    let race = unique("rate-race");
    let results = join_all((0..20).map(|_| limiter.check(&race, quota, t0))).await;
    let allowed = results
        .into_iter()
        .map(Result::unwrap)
        .filter(|d| *d == RateDecision::Allowed)
        .count();
    assert_eq!(
        allowed, 5,
        "concurrent checks must let exactly the burst through"
    );
}
