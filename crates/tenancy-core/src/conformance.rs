//! The identity store conformance suite (feature `conformance`): plain async functions
//! that every backend runs — the in-memory, SQLite and PostgreSQL stores here, and any
//! third-party store. Each function expects an empty store and panics (like any test)
//! when the store breaks the contract documented on the traits in
//! [`crate::identity`]. Call each from a `#[tokio::test]` with a fresh store, as
//! `tests/identity_stores.rs` of this crate does for the built-in backends.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test suite reports failures by panicking"
)]

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use futures_util::future::join_all;

use crate::clock::{Clock, ManualClock, SystemClock};
use crate::error::ErrorKind;
use crate::identity::{
    DisplayName, Email, EmailVerification, Identity, IdentityStore, Invitation, Membership,
    NewTenant, NewUser, PasswordHash, RoleName, SecretToken, Slug, Tenant, TenantChanges,
    TenantStatus, User, UserChanges, UserStatus,
};
use crate::ids::{InvitationId, MembershipId, TenantId, UserId, VerificationId};
use crate::page::{Page, PageRequest};

pub mod events;
#[cfg(feature = "oauth")]
pub mod oauth;

fn now() -> DateTime<Utc> {
    SystemClock.now()
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &TenantId::new().as_uuid().simple().to_string()[20..]
    )
}

/// A valid tenant record with a unique slug starting with `prefix`.
#[must_use]
pub fn sample_tenant(prefix: &str) -> Tenant {
    let t = now();
    Tenant {
        id: TenantId::new(),
        slug: Slug::parse(&unique(prefix)).unwrap(),
        display_name: DisplayName::parse("Sample Tenant").unwrap(),
        status: TenantStatus::Active,
        metadata: serde_json::json!({ "plan": "pro", "seats": 5 }),
        created_at: t,
        updated_at: t,
        version: 1,
    }
}

/// A valid user record with the given email.
#[must_use]
pub fn sample_user(email: &str) -> User {
    let t = now();
    User {
        id: UserId::new(),
        email: Email::parse(email).unwrap(),
        email_verified: false,
        display_name: DisplayName::parse("Sample User").unwrap(),
        attributes: serde_json::json!({ "locale": "en" }),
        status: UserStatus::Active,
        password_hash: None,
        created_at: t,
        updated_at: t,
        version: 1,
    }
}

fn sample_membership(tenant: TenantId, user: UserId, roles: &[&str]) -> Membership {
    let t = now();
    Membership {
        id: MembershipId::new(),
        tenant_id: tenant,
        user_id: user,
        roles: RoleName::parse_all(roles).unwrap(),
        created_at: t,
        updated_at: t,
        version: 1,
    }
}

fn sample_invitation(
    tenant: TenantId,
    email: &str,
    expires_in: Duration,
) -> (Invitation, SecretToken) {
    let token = SecretToken::generate().unwrap();
    let t = now();
    let invitation = Invitation {
        id: InvitationId::new(),
        tenant_id: tenant,
        email: Email::parse(email).unwrap(),
        roles: RoleName::parse_all(&["editor"]).unwrap(),
        token_hash: token.hash(),
        created_at: t,
        expires_at: t + expires_in,
        accepted_at: None,
        accepted_by: None,
    };
    (invitation, token)
}

#[track_caller]
fn assert_kind<T: std::fmt::Debug>(result: crate::Result<T>, kind: ErrorKind) {
    match result {
        Err(e) => assert_eq!(e.kind(), kind, "expected {kind:?}, got error: {e}"),
        Ok(v) => panic!("expected {kind:?}, got Ok({v:?})"),
    }
}

async fn collect_pages<T, F, Fut>(limit: u32, mut next: F) -> Vec<T>
where
    F: FnMut(PageRequest) -> Fut,
    Fut: std::future::Future<Output = crate::Result<Page<T>>>,
{
    let mut all = Vec::new();
    let mut request = PageRequest::first(limit);
    for _ in 0..10_000 {
        let page = next(request).await.unwrap();
        assert!(
            page.items.len() <= limit as usize,
            "page larger than its limit"
        );
        let done = page.next.is_none();
        if !done {
            assert_eq!(
                page.items.len(),
                limit as usize,
                "a page before the last must be full"
            );
        }
        all.extend(page.items);
        match page.next {
            Some(cursor) => {
                request = PageRequest {
                    after: Some(cursor),
                    limit,
                }
            }
            None => return all,
        }
    }
    panic!("pagination did not terminate");
}

/// Tenants: insert, read by id and slug, update (version +1), list.
pub async fn tenant_crud(store: &dyn IdentityStore) {
    let tenant = sample_tenant("crud");
    store.insert_tenant(&tenant).await.unwrap();
    assert_eq!(store.tenant(tenant.id).await.unwrap(), tenant);
    assert_eq!(store.tenant_by_slug(&tenant.slug).await.unwrap(), tenant);
    assert_kind(store.tenant(TenantId::new()).await, ErrorKind::NotFound);
    assert_kind(
        store
            .tenant_by_slug(&Slug::parse("no-such-slug").unwrap())
            .await,
        ErrorKind::NotFound,
    );

    let mut changed = tenant.clone();
    changed.display_name = DisplayName::parse("Renamed").unwrap();
    changed.status = TenantStatus::Suspended;
    changed.metadata = serde_json::json!({ "plan": "enterprise" });
    changed.slug = Slug::parse(&unique("renamed")).unwrap();
    changed.updated_at = now();
    let updated = store.update_tenant(&changed).await.unwrap();
    assert_eq!(updated.version, 2);
    assert_eq!(updated.display_name.as_str(), "Renamed");
    assert_eq!(updated.status, TenantStatus::Suspended);
    assert_eq!(store.tenant(tenant.id).await.unwrap(), updated);
    assert_eq!(
        store.tenant_by_slug(&changed.slug).await.unwrap().id,
        tenant.id
    );
    assert_kind(
        store.tenant_by_slug(&tenant.slug).await,
        ErrorKind::NotFound,
    );

    let listed = store.list_tenants(&PageRequest::first(10)).await.unwrap();
    assert_eq!(listed.items, vec![updated]);
    assert!(listed.next.is_none());
}

/// Unique keys: tenant id and slug, user id and email (case-insensitive), one membership
/// per (tenant, user); a refused write changes nothing.
pub async fn uniqueness_conflicts(store: &dyn IdentityStore) {
    let a = sample_tenant("uniq");
    store.insert_tenant(&a).await.unwrap();
    let mut same_slug = sample_tenant("other");
    same_slug.slug = a.slug.clone();
    assert_kind(
        store.insert_tenant(&same_slug).await,
        ErrorKind::AlreadyExists,
    );
    let mut same_id = sample_tenant("other");
    same_id.id = a.id;
    assert_kind(
        store.insert_tenant(&same_id).await,
        ErrorKind::AlreadyExists,
    );
    assert_kind(store.tenant(same_slug.id).await, ErrorKind::NotFound);

    let b = sample_tenant("uniq");
    store.insert_tenant(&b).await.unwrap();
    let mut steal = b.clone();
    steal.slug = a.slug.clone();
    assert_kind(store.update_tenant(&steal).await, ErrorKind::AlreadyExists);
    assert_eq!(store.tenant(b.id).await.unwrap(), b);

    let alice = sample_user("Alice@Example.com");
    store.insert_user(&alice).await.unwrap();
    assert_kind(
        store.insert_user(&sample_user("alice@EXAMPLE.com")).await,
        ErrorKind::AlreadyExists,
    );
    let found = store
        .user_by_email(&Email::parse("ALICE@example.COM").unwrap())
        .await
        .unwrap();
    assert_eq!(found, alice);
    assert_eq!(
        found.email.as_str(),
        "Alice@Example.com",
        "the email keeps its case"
    );

    let bob = sample_user("bob@example.com");
    store.insert_user(&bob).await.unwrap();
    let mut steal = bob.clone();
    steal.email = Email::parse("alice@example.com").unwrap();
    assert_kind(store.update_user(&steal).await, ErrorKind::AlreadyExists);
    assert_eq!(store.user(bob.id).await.unwrap(), bob);

    store
        .insert_membership(a.id, &sample_membership(a.id, alice.id, &["admin"]))
        .await
        .unwrap();
    assert_kind(
        store
            .insert_membership(a.id, &sample_membership(a.id, alice.id, &["viewer"]))
            .await,
        ErrorKind::AlreadyExists,
    );
    assert_eq!(
        store.membership(a.id, alice.id).await.unwrap().roles[0].as_str(),
        "admin"
    );
}

/// Users: insert, read by id and email, update, password hash round trip, list.
pub async fn user_crud(store: &dyn IdentityStore) {
    let mut user = sample_user("carol@example.org");
    user.password_hash = Some(PasswordHash::new("a long passphrase").unwrap());
    store.insert_user(&user).await.unwrap();
    let read = store.user(user.id).await.unwrap();
    assert_eq!(read, user);
    assert!(read.password_hash.unwrap().verify("a long passphrase"));
    assert_kind(store.user(UserId::new()).await, ErrorKind::NotFound);
    assert_kind(
        store
            .user_by_email(&Email::parse("nobody@example.org").unwrap())
            .await,
        ErrorKind::NotFound,
    );

    let mut changed = user.clone();
    changed.email = Email::parse("carol@example.net").unwrap();
    changed.email_verified = true;
    changed.status = UserStatus::Disabled;
    changed.attributes = serde_json::json!({ "team": "blue" });
    changed.password_hash = None;
    let updated = store.update_user(&changed).await.unwrap();
    assert_eq!(updated.version, 2);
    assert!(updated.password_hash.is_none());
    assert_eq!(store.user(user.id).await.unwrap(), updated);
    assert_kind(store.user_by_email(&user.email).await, ErrorKind::NotFound);
    assert_eq!(
        store.user_by_email(&changed.email).await.unwrap().id,
        user.id
    );
    // The old address is free again.
    store
        .insert_user(&sample_user("carol@example.org"))
        .await
        .unwrap();
    assert_eq!(
        store
            .list_users(&PageRequest::first(0))
            .await
            .unwrap()
            .items
            .len(),
        2
    );
}

/// Optimistic concurrency: of two writers that read the same version, the second gets
/// `Conflict` and its write is lost; updating a missing row is `NotFound`.
pub async fn optimistic_concurrency(store: &dyn IdentityStore) {
    let tenant = sample_tenant("occ");
    store.insert_tenant(&tenant).await.unwrap();
    let mut first = tenant.clone();
    first.display_name = DisplayName::parse("First").unwrap();
    let mut second = tenant.clone();
    second.display_name = DisplayName::parse("Second").unwrap();
    assert_eq!(store.update_tenant(&first).await.unwrap().version, 2);
    assert_kind(store.update_tenant(&second).await, ErrorKind::Conflict);
    assert_eq!(
        store.tenant(tenant.id).await.unwrap().display_name.as_str(),
        "First"
    );
    assert_kind(
        store.update_tenant(&sample_tenant("ghost")).await,
        ErrorKind::NotFound,
    );

    let user = sample_user("occ@example.com");
    store.insert_user(&user).await.unwrap();
    let mut first = user.clone();
    first.email_verified = true;
    let mut second = user.clone();
    second.status = UserStatus::Disabled;
    store.update_user(&first).await.unwrap();
    assert_kind(store.update_user(&second).await, ErrorKind::Conflict);
    let stored = store.user(user.id).await.unwrap();
    assert!(stored.email_verified);
    assert_eq!(stored.status, UserStatus::Active);
    assert_kind(
        store.update_user(&sample_user("ghost@example.com")).await,
        ErrorKind::NotFound,
    );

    let m = sample_membership(tenant.id, user.id, &["viewer"]);
    store.insert_membership(tenant.id, &m).await.unwrap();
    let mut first = m.clone();
    first.roles = RoleName::parse_all(&["admin"]).unwrap();
    let mut second = m.clone();
    second.roles = RoleName::parse_all(&["billing"]).unwrap();
    assert_eq!(
        store
            .update_membership(tenant.id, &first)
            .await
            .unwrap()
            .version,
        2
    );
    assert_kind(
        store.update_membership(tenant.id, &second).await,
        ErrorKind::Conflict,
    );
    assert_eq!(
        store.membership(tenant.id, user.id).await.unwrap().roles,
        first.roles
    );

    // Many concurrent writers from one version: exactly one wins.
    let base = store.tenant(tenant.id).await.unwrap();
    let attempts = (0..8).map(|i| {
        let mut t = base.clone();
        t.display_name = DisplayName::parse(&format!("Writer {i}")).unwrap();
        async move { store.update_tenant(&t).await }
    });
    let results = join_all(attempts).await;
    let wins = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(
        wins, 1,
        "exactly one concurrent writer must win: {results:?}"
    );
    for r in results.into_iter().filter_map(Result::err) {
        assert_eq!(r.kind(), ErrorKind::Conflict);
    }
    assert_eq!(
        store.tenant(tenant.id).await.unwrap().version,
        base.version + 1
    );
}

/// Cursor pagination walks every row exactly once, in id order, for every list.
pub async fn pagination(store: &dyn IdentityStore) {
    let mut tenant_ids = Vec::new();
    for _ in 0..23 {
        let t = sample_tenant("page");
        store.insert_tenant(&t).await.unwrap();
        tenant_ids.push(t.id);
    }
    let mut user_ids = Vec::new();
    for i in 0..12 {
        let u = sample_user(&format!("page{i}@example.com"));
        store.insert_user(&u).await.unwrap();
        user_ids.push(u.id);
    }
    let tenants = collect_pages(10, |p| async move { store.list_tenants(&p).await }).await;
    assert_eq!(tenants.iter().map(|t| t.id).collect::<Vec<_>>(), tenant_ids);
    let users = collect_pages(5, |p| async move { store.list_users(&p).await }).await;
    assert_eq!(users.iter().map(|u| u.id).collect::<Vec<_>>(), user_ids);
    // Exactly a multiple of the page size: the last full page says there is no more
    // only when nothing follows.
    let users = collect_pages(4, |p| async move { store.list_users(&p).await }).await;
    assert_eq!(users.len(), 12);

    let home = tenant_ids[0];
    let mut membership_ids = Vec::new();
    for user in &user_ids {
        let m = sample_membership(home, *user, &["member"]);
        store.insert_membership(home, &m).await.unwrap();
        membership_ids.push(m.id);
    }
    for tenant in &tenant_ids[1..8] {
        store
            .insert_membership(
                *tenant,
                &sample_membership(*tenant, user_ids[0], &["member"]),
            )
            .await
            .unwrap();
    }
    let members = collect_pages(5, |p| async move { store.list_memberships(home, &p).await }).await;
    assert_eq!(
        members.iter().map(|m| m.id).collect::<Vec<_>>(),
        membership_ids
    );
    let first_user = user_ids[0];
    let mine = collect_pages(3, |p| async move {
        store.list_user_memberships(first_user, &p).await
    })
    .await;
    assert_eq!(mine.len(), 8);
    assert_eq!(
        mine.iter()
            .map(|m| m.tenant_id)
            .collect::<HashSet<_>>()
            .len(),
        8
    );

    let mut invitation_ids = Vec::new();
    for i in 0..7 {
        let (inv, _) = sample_invitation(home, &format!("inv{i}@example.com"), Duration::days(1));
        store.insert_invitation(home, &inv).await.unwrap();
        invitation_ids.push(inv.id);
    }
    let invitations =
        collect_pages(2, |p| async move { store.list_invitations(home, &p).await }).await;
    assert_eq!(
        invitations.iter().map(|i| i.id).collect::<Vec<_>>(),
        invitation_ids
    );

    // Limits are capped; an empty list is one empty page.
    let capped = store
        .list_tenants(&PageRequest::first(1_000_000))
        .await
        .unwrap();
    assert_eq!(capped.items.len(), 23);
    let empty = store
        .list_memberships(TenantId::new(), &PageRequest::first(10))
        .await
        .unwrap();
    assert!(empty.items.is_empty() && empty.next.is_none());
}

/// Memberships: insert, read, update roles, list by tenant and by user; removing a user
/// from one tenant removes only that membership; references must exist.
pub async fn memberships(store: &dyn IdentityStore) {
    let (a, b) = (sample_tenant("mem-a"), sample_tenant("mem-b"));
    store.insert_tenant(&a).await.unwrap();
    store.insert_tenant(&b).await.unwrap();
    let (u, v) = (sample_user("u@example.com"), sample_user("v@example.com"));
    store.insert_user(&u).await.unwrap();
    store.insert_user(&v).await.unwrap();

    let ua = sample_membership(a.id, u.id, &["admin", "billing"]);
    let ub = sample_membership(b.id, u.id, &["viewer"]);
    let va = sample_membership(a.id, v.id, &["viewer"]);
    for m in [&ua, &ub, &va] {
        store.insert_membership(m.tenant_id, m).await.unwrap();
    }
    assert_eq!(store.membership(a.id, u.id).await.unwrap(), ua);
    assert_kind(
        store
            .insert_membership(a.id, &sample_membership(a.id, UserId::new(), &["viewer"]))
            .await,
        ErrorKind::NotFound,
    );
    let ghost = TenantId::new();
    assert_kind(
        store
            .insert_membership(ghost, &sample_membership(ghost, v.id, &["viewer"]))
            .await,
        ErrorKind::NotFound,
    );

    let in_a = store
        .list_memberships(a.id, &PageRequest::first(10))
        .await
        .unwrap()
        .items;
    assert_eq!(in_a, vec![ua.clone(), va.clone()]);
    let of_u = store
        .list_user_memberships(u.id, &PageRequest::first(10))
        .await
        .unwrap()
        .items;
    assert_eq!(of_u, vec![ua.clone(), ub.clone()]);

    store.delete_membership(a.id, u.id).await.unwrap();
    assert_kind(store.membership(a.id, u.id).await, ErrorKind::NotFound);
    assert_kind(
        store.delete_membership(a.id, u.id).await,
        ErrorKind::NotFound,
    );
    assert_eq!(
        store.membership(b.id, u.id).await.unwrap(),
        ub,
        "other tenants keep theirs"
    );
    assert_eq!(
        store.membership(a.id, v.id).await.unwrap(),
        va,
        "other members stay"
    );
    assert_eq!(store.user(u.id).await.unwrap(), u, "the user stays");
    // The user may join again.
    store
        .insert_membership(a.id, &sample_membership(a.id, u.id, &["viewer"]))
        .await
        .unwrap();
}

/// Invitations: found only by their token in their tenant, accepted once, never after
/// expiry; of many concurrent acceptances exactly one succeeds.
pub async fn invitation_tokens(store: &dyn IdentityStore) {
    let tenant = sample_tenant("inv");
    store.insert_tenant(&tenant).await.unwrap();
    let user = sample_user("invitee@example.com");
    store.insert_user(&user).await.unwrap();

    let (invitation, token) =
        sample_invitation(tenant.id, "invitee@example.com", Duration::hours(1));
    store
        .insert_invitation(tenant.id, &invitation)
        .await
        .unwrap();
    assert_eq!(
        store.invitation(tenant.id, invitation.id).await.unwrap(),
        invitation
    );
    assert_kind(
        store.invitation(tenant.id, InvitationId::new()).await,
        ErrorKind::NotFound,
    );

    let wrong = SecretToken::generate().unwrap();
    assert_kind(
        store
            .accept_invitation(tenant.id, &wrong.hash(), user.id, now())
            .await,
        ErrorKind::NotFound,
    );
    // Expired: not accepted, and still unused afterwards.
    let later = invitation.expires_at + Duration::seconds(1);
    assert_kind(
        store
            .accept_invitation(tenant.id, &token.hash(), user.id, later)
            .await,
        ErrorKind::PermissionDenied,
    );
    assert!(
        store
            .invitation(tenant.id, invitation.id)
            .await
            .unwrap()
            .accepted_at
            .is_none()
    );

    let at = now();
    let accepted = store
        .accept_invitation(tenant.id, &token.hash(), user.id, at)
        .await
        .unwrap();
    assert_eq!(accepted.accepted_at, Some(at));
    assert_eq!(accepted.accepted_by, Some(user.id));
    assert_eq!(
        store.invitation(tenant.id, invitation.id).await.unwrap(),
        accepted
    );
    assert_kind(
        store
            .accept_invitation(tenant.id, &token.hash(), user.id, now())
            .await,
        ErrorKind::Conflict,
    );

    let (race, race_token) = sample_invitation(tenant.id, "race@example.com", Duration::hours(1));
    store.insert_invitation(tenant.id, &race).await.unwrap();
    let hash = race_token.hash();
    let attempts = (0..8).map(|_| store.accept_invitation(tenant.id, &hash, user.id, at));
    let results = join_all(attempts).await;
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    for r in results.into_iter().filter_map(Result::err) {
        assert_eq!(r.kind(), ErrorKind::Conflict);
    }
}

/// Email verifications: consumed once, never after expiry, only for existing users.
pub async fn verification_tokens(store: &dyn IdentityStore) {
    let user = sample_user("verify@example.com");
    store.insert_user(&user).await.unwrap();
    let token = SecretToken::generate().unwrap();
    let t = now();
    let verification = EmailVerification {
        id: VerificationId::new(),
        user_id: user.id,
        email: user.email.clone(),
        token_hash: token.hash(),
        created_at: t,
        expires_at: t + Duration::minutes(30),
        consumed_at: None,
    };
    store.insert_verification(&verification).await.unwrap();
    let mut orphan = verification.clone();
    orphan.id = VerificationId::new();
    orphan.user_id = UserId::new();
    orphan.token_hash = SecretToken::generate().unwrap().hash();
    assert_kind(
        store.insert_verification(&orphan).await,
        ErrorKind::NotFound,
    );

    assert_kind(
        store
            .consume_verification(&SecretToken::generate().unwrap().hash(), t)
            .await,
        ErrorKind::NotFound,
    );
    assert_kind(
        store
            .consume_verification(&token.hash(), verification.expires_at)
            .await,
        ErrorKind::PermissionDenied,
    );
    let consumed = store.consume_verification(&token.hash(), t).await.unwrap();
    assert_eq!(consumed.user_id, user.id);
    assert_eq!(consumed.consumed_at, Some(t));
    assert_kind(
        store.consume_verification(&token.hash(), t).await,
        ErrorKind::Conflict,
    );

    let race = SecretToken::generate().unwrap();
    let mut second = verification.clone();
    second.id = VerificationId::new();
    second.token_hash = race.hash();
    store.insert_verification(&second).await.unwrap();
    let hash = race.hash();
    let results = join_all((0..8).map(|_| store.consume_verification(&hash, t))).await;
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
}

/// Two tenants with the same member, the same roles and invitations for the same
/// address never see or touch each other's rows.
pub async fn tenant_isolation(store: &dyn IdentityStore) {
    let (a, b) = (sample_tenant("iso-a"), sample_tenant("iso-b"));
    store.insert_tenant(&a).await.unwrap();
    store.insert_tenant(&b).await.unwrap();
    let user = sample_user("shared@example.com");
    store.insert_user(&user).await.unwrap();
    let ma = sample_membership(a.id, user.id, &["admin"]);
    let mb = sample_membership(b.id, user.id, &["admin"]);
    store.insert_membership(a.id, &ma).await.unwrap();
    store.insert_membership(b.id, &mb).await.unwrap();
    let (ia, ta) = sample_invitation(a.id, "guest@example.com", Duration::hours(1));
    let (ib, _tb) = sample_invitation(b.id, "guest@example.com", Duration::hours(1));
    store.insert_invitation(a.id, &ia).await.unwrap();
    store.insert_invitation(b.id, &ib).await.unwrap();

    // Reads through the other tenant find nothing.
    assert_kind(store.invitation(b.id, ia.id).await, ErrorKind::NotFound);
    assert_kind(
        store
            .accept_invitation(b.id, &ta.hash(), user.id, now())
            .await,
        ErrorKind::NotFound,
    );
    assert!(
        store
            .invitation(a.id, ia.id)
            .await
            .unwrap()
            .accepted_at
            .is_none()
    );
    assert_eq!(
        store
            .list_memberships(a.id, &PageRequest::first(10))
            .await
            .unwrap()
            .items,
        vec![ma.clone()]
    );
    assert_eq!(
        store
            .list_memberships(b.id, &PageRequest::first(10))
            .await
            .unwrap()
            .items,
        vec![mb.clone()]
    );
    assert_eq!(
        store
            .list_invitations(a.id, &PageRequest::first(10))
            .await
            .unwrap()
            .items,
        vec![ia.clone()]
    );
    assert_eq!(
        store
            .list_invitations(b.id, &PageRequest::first(10))
            .await
            .unwrap()
            .items,
        vec![ib.clone()]
    );

    // Writes naming the other tenant are refused and change nothing.
    let mut smuggled = sample_membership(b.id, user.id, &["owner"]);
    assert_kind(
        store.insert_membership(a.id, &smuggled).await,
        ErrorKind::InvalidInput,
    );
    smuggled.tenant_id = a.id;
    smuggled.id = mb.id;
    assert_kind(
        store.update_membership(a.id, &smuggled).await,
        ErrorKind::NotFound,
    );
    let mut cross = mb.clone();
    cross.roles = RoleName::parse_all(&["owner"]).unwrap();
    assert_kind(
        store.update_membership(a.id, &cross).await,
        ErrorKind::InvalidInput,
    );
    let (mut foreign, _) = sample_invitation(b.id, "x@example.com", Duration::hours(1));
    assert_kind(
        store.insert_invitation(a.id, &foreign).await,
        ErrorKind::InvalidInput,
    );
    foreign.tenant_id = a.id;
    assert_eq!(
        store
            .list_invitations(b.id, &PageRequest::first(10))
            .await
            .unwrap()
            .items
            .len(),
        1
    );

    store.delete_membership(a.id, user.id).await.unwrap();
    assert_eq!(store.membership(b.id, user.id).await.unwrap(), mb);
    assert_eq!(
        store.membership(b.id, user.id).await.unwrap().roles,
        mb.roles
    );
}

/// The [`Identity`] service over the store: bad input names its field and writes
/// nothing; invitations, verification and password sign-in work end to end.
pub async fn identity_service(store: Arc<dyn IdentityStore>) {
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let identity = Identity::new(store).with_clock(clock.clone());

    let bad = [
        (
            NewTenant {
                slug: "No Spaces".into(),
                display_name: "x".into(),
                ..Default::default()
            },
            "slug",
        ),
        (
            NewTenant {
                slug: "ok-slug".into(),
                display_name: " ".into(),
                ..Default::default()
            },
            "display_name",
        ),
        (
            NewTenant {
                slug: "ok-slug".into(),
                display_name: "x".into(),
                metadata: serde_json::json!(3),
            },
            "metadata",
        ),
    ];
    for (input, field) in bad {
        let err = identity.create_tenant(input).await.unwrap_err();
        assert_eq!(err.field(), Some(field), "{err}");
    }
    let err = identity
        .create_user(NewUser {
            email: "not-an-email".into(),
            display_name: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.field(), Some("email"));
    let err = identity
        .create_user(NewUser {
            email: "weak@example.com".into(),
            display_name: "x".into(),
            password: Some("short".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.field(), Some("password"));
    assert!(
        identity
            .list_tenants(&PageRequest::first(10))
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        identity
            .list_users(&PageRequest::first(10))
            .await
            .unwrap()
            .items
            .is_empty()
    );

    let acme = identity
        .create_tenant(NewTenant {
            slug: "acme".into(),
            display_name: "Acme".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let alice = identity
        .create_user(NewUser {
            email: "alice@acme.test".into(),
            display_name: "Alice".into(),
            password: Some("correct horse battery".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let err = identity
        .add_member(acme.id, alice.id, &["Bad Role"])
        .await
        .unwrap_err();
    assert_eq!(err.field(), Some("roles"));
    assert!(
        identity
            .list_members(acme.id, &PageRequest::first(10))
            .await
            .unwrap()
            .items
            .is_empty()
    );

    // Password sign-in: one answer for every failure.
    assert_eq!(
        identity
            .authenticate("ALICE@acme.test", "correct horse battery")
            .await
            .unwrap()
            .id,
        alice.id
    );
    for (email, password) in [
        ("alice@acme.test", "wrong password"),
        ("nobody@acme.test", "correct horse battery"),
        ("not an email", "x"),
    ] {
        let err = identity.authenticate(email, password).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unauthenticated);
        assert_eq!(err.to_string(), "invalid email or password");
    }

    // Invitation: accepted once, then refused; expired ones refused.
    let (invitation, token) = identity
        .invite(acme.id, "alice@acme.test", &["editor"], Duration::days(1))
        .await
        .unwrap();
    assert_eq!(
        identity
            .invitation(acme.id, invitation.id)
            .await
            .unwrap()
            .roles[0]
            .as_str(),
        "editor"
    );
    let membership = identity
        .accept_invitation(acme.id, token.expose(), alice.id)
        .await
        .unwrap();
    assert_eq!(
        membership
            .roles
            .iter()
            .map(RoleName::as_str)
            .collect::<Vec<_>>(),
        ["editor"]
    );
    assert_kind(
        identity
            .accept_invitation(acme.id, token.expose(), alice.id)
            .await,
        ErrorKind::Conflict,
    );
    let (_, second) = identity
        .invite(acme.id, "alice@acme.test", &["admin"], Duration::hours(1))
        .await
        .unwrap();
    let merged = identity
        .accept_invitation(acme.id, second.expose(), alice.id)
        .await
        .unwrap();
    assert_eq!(
        merged
            .roles
            .iter()
            .map(RoleName::as_str)
            .collect::<Vec<_>>(),
        ["admin", "editor"]
    );
    let (_, late) = identity
        .invite(acme.id, "late@acme.test", &["viewer"], Duration::minutes(5))
        .await
        .unwrap();
    clock.advance(Duration::minutes(6));
    assert_kind(
        identity
            .accept_invitation(acme.id, late.expose(), alice.id)
            .await,
        ErrorKind::PermissionDenied,
    );
    let err = identity
        .invite(acme.id, "x@acme.test", &["viewer"], Duration::days(365))
        .await
        .unwrap_err();
    assert_eq!(err.field(), Some("ttl"));

    // Roles update with the version read; a stale version is refused.
    let updated = identity
        .set_member_roles(acme.id, alice.id, merged.version, &["owner"])
        .await
        .unwrap();
    assert_kind(
        identity
            .set_member_roles(acme.id, alice.id, merged.version, &["viewer"])
            .await,
        ErrorKind::Conflict,
    );
    assert_eq!(
        identity.membership(acme.id, alice.id).await.unwrap(),
        updated
    );

    // Email verification.
    let token = identity
        .start_email_verification(alice.id, Duration::hours(1))
        .await
        .unwrap();
    let verified = identity
        .confirm_email_verification(token.expose())
        .await
        .unwrap();
    assert!(verified.email_verified);
    assert_kind(
        identity.confirm_email_verification(token.expose()).await,
        ErrorKind::Conflict,
    );
    // Changing the address un-verifies it; an old token for the old address cannot
    // verify the new one.
    let token = identity
        .start_email_verification(alice.id, Duration::hours(1))
        .await
        .unwrap();
    let moved = identity
        .update_user(
            alice.id,
            verified.version,
            UserChanges {
                email: Some("alice@new.test".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(!moved.email_verified);
    assert_kind(
        identity.confirm_email_verification(token.expose()).await,
        ErrorKind::Conflict,
    );

    // Tenant life cycle with versions.
    let renamed = identity
        .update_tenant(
            acme.id,
            acme.version,
            TenantChanges {
                display_name: Some("Acme Inc".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_kind(
        identity
            .update_tenant(acme.id, acme.version, TenantChanges::default())
            .await,
        ErrorKind::Conflict,
    );
    let deleted = identity
        .set_tenant_status(acme.id, renamed.version, TenantStatus::Deleted)
        .await
        .unwrap();
    assert_kind(
        identity
            .set_tenant_status(acme.id, deleted.version, TenantStatus::Active)
            .await,
        ErrorKind::Conflict,
    );
    assert_kind(
        identity
            .invite(acme.id, "y@acme.test", &["viewer"], Duration::hours(1))
            .await,
        ErrorKind::Conflict,
    );
    assert_eq!(
        identity.tenant_by_slug("acme").await.unwrap().status,
        TenantStatus::Deleted
    );
}

/// The URL of a test backend from the environment variable `var`. When it is unset
/// the test should skip: this prints why and returns `None` — unless
/// `TENANCY_TEST_REQUIRE_BACKENDS=1` (CI), where a backend that cannot be tested is a
/// failure.
#[must_use]
pub fn backend_url(var: &str, what: &str) -> Option<String> {
    if let Ok(url) = std::env::var(var) {
        return Some(url);
    }
    assert!(
        std::env::var("TENANCY_TEST_REQUIRE_BACKENDS").as_deref() != Ok("1"),
        "{var} is unset but TENANCY_TEST_REQUIRE_BACKENDS=1"
    );
    eprintln!("skipped: {var} is unset, {what} not tested");
    None
}

/// A PostgreSQL database of its own for one test, on the server
/// `TENANCY_TEST_POSTGRES_URL` names (an admin URL), plus the application role
/// [`PgTestDatabase::APP_ROLE`]: not a superuser, no BYPASSRLS, owning nothing. The
/// test migrates it as the owner and grants the role, then works as the role.
#[cfg(feature = "postgres")]
#[derive(Debug)]
pub struct PgTestDatabase {
    admin_url: String,
    admin: sqlx::postgres::PgConnectOptions,
    name: String,
}

/// A SQLite store in a file `name` under `dir` with the identity migrations and then
/// `domain`'s applied (twice, to show they are idempotent): what a domain crate's tests
/// run their suite on.
#[cfg(feature = "sqlite")]
pub async fn sqlite_test_store(
    dir: &std::path::Path,
    name: &str,
    domain: impl AsyncFn(&crate::sqlite::SqliteStore) -> crate::error::Result<()>,
) -> crate::sqlite::SqliteStore {
    let url = format!("sqlite://{}", dir.join(name).display());
    let store = crate::sqlite::SqliteStore::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    domain(&store).await.unwrap();
    domain(&store).await.unwrap();
    store
}

#[cfg(feature = "postgres")]
impl PgTestDatabase {
    /// The application role the tests connect as.
    pub const APP_ROLE: &'static str = "tenancy_app_test";

    /// Creates the database (and the role, if absent); `None` when the URL is unset
    /// (see [`backend_url`]).
    pub async fn create() -> Option<Self> {
        use std::str::FromStr as _;

        use sqlx::{AssertSqlSafe, Connection as _, Executor as _};
        let admin_url = backend_url("TENANCY_TEST_POSTGRES_URL", "PostgreSQL")?;
        let admin = sqlx::postgres::PgConnectOptions::from_str(&admin_url).unwrap();
        let name = format!("tenancy_test_{}", uuid::Uuid::now_v7().simple());
        let mut server = sqlx::PgConnection::connect_with(&admin).await.unwrap();
        server
            .execute(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .unwrap();
        server
            .execute(AssertSqlSafe(format!(
                "DO $$ BEGIN CREATE ROLE {} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE; \
                 EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$",
                Self::APP_ROLE
            )))
            .await
            .unwrap();
        server.close().await.unwrap();
        Some(Self {
            admin_url,
            admin,
            name,
        })
    }

    /// The admin URL the database was created from.
    #[must_use]
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }

    /// The database's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Connection options of the owner (the admin, in this database).
    #[must_use]
    pub fn owner_options(&self) -> sqlx::postgres::PgConnectOptions {
        self.admin.clone().database(&self.name)
    }

    /// Connection options of [`PgTestDatabase::APP_ROLE`] in this database.
    #[must_use]
    pub fn app_options(&self) -> sqlx::postgres::PgConnectOptions {
        self.owner_options().username(Self::APP_ROLE).password("")
    }

    /// The store a domain crate's tests use: the owner applies the identity migrations
    /// and then `domain`'s, grants [`PgTestDatabase::APP_ROLE`] its rights and
    /// disconnects; the store returned is connected as that role (which owns nothing and
    /// cannot bypass row-level security), and `domain` is run once more through it to
    /// show an applied migration needs no DDL rights.
    pub async fn app_store(
        &self,
        domain: impl AsyncFn(&crate::postgres::PgStore) -> crate::error::Result<()>,
    ) -> crate::postgres::PgStore {
        use crate::postgres::PgStore;
        let owner = PgStore::connect_with(self.owner_options()).await.unwrap();
        owner.migrate().await.unwrap();
        domain(&owner).await.unwrap();
        owner.grant_app_role(Self::APP_ROLE).await.unwrap();
        owner.pool().close().await;
        let app = PgStore::connect_with(self.app_options()).await.unwrap();
        domain(&app).await.unwrap();
        app
    }

    /// Drops the database, closing its connections.
    pub async fn drop_database(self) {
        use sqlx::{AssertSqlSafe, Connection as _, Executor as _};
        let mut server = sqlx::PgConnection::connect_with(&self.admin).await.unwrap();
        server
            .execute(AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            )))
            .await
            .unwrap();
        server.close().await.unwrap();
    }
}
