//! [`KeyManager`]: the life cycle of the signing keys (create, publish ahead, rotate,
//! retire, purge) over a [`KeyStore`], and JWT signing with the current key.

use std::cmp::Ordering;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::jwks::{Jwks, KeyRing, Signer};
use super::keys::{self, Algorithm, SigningKey};
use super::master::MasterKey;
use super::store::{KeyRecord, KeyStore};
use crate::clock::Clock;
use crate::error::{Error, ErrorKind, Result};

/// The `typ` header of JWT access tokens (RFC 9068 §2.1).
pub const TYP_ACCESS_TOKEN: &str = "at+jwt";
/// The `typ` header of ID tokens.
pub const TYP_ID_TOKEN: &str = "JWT";

/// At most this many store writes in one refresh (a healthy one needs at most three).
const MAX_STEPS: usize = 8;

/// How the signing keys rotate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationPolicy {
    /// The algorithm of new keys (existing keys keep theirs).
    pub algorithm: Algorithm,
    /// How long a key signs before the next one takes over (default 30 days).
    pub rotate_every: Duration,
    /// How long a key is published in the JWKS, at least, before it signs (default 1
    /// hour): verifiers that cache the JWKS for less than this never meet an unknown
    /// `kid`.
    pub publish_ahead: Duration,
    /// The longest lifetime of a token signed by these keys (default 1 hour): a key
    /// that stops signing stays published this long, so every token it signed still
    /// verifies until it expires. The token issuer must not sign longer-lived tokens.
    pub max_token_lifetime: Duration,
}

impl Default for RotationPolicy {
    fn default() -> Self {
        Self {
            algorithm: Algorithm::Es256,
            rotate_every: Duration::days(30),
            publish_ahead: Duration::hours(1),
            max_token_lifetime: Duration::hours(1),
        }
    }
}

impl RotationPolicy {
    /// Checks that every duration is positive and that a key is published ahead for
    /// less time than it signs; `InvalidInput` naming the offending field.
    pub fn validate(&self) -> Result<()> {
        for (field, value) in [
            ("rotate_every", self.rotate_every),
            ("publish_ahead", self.publish_ahead),
            ("max_token_lifetime", self.max_token_lifetime),
        ] {
            if value <= Duration::zero() {
                return Err(Error::invalid(field, "must be positive"));
            }
        }
        if self.publish_ahead >= self.rotate_every {
            return Err(Error::invalid(
                "publish_ahead",
                "must be shorter than `rotate_every`",
            ));
        }
        Ok(())
    }
}

/// The signing keys of the provider: loads them from a [`KeyStore`], keeps their life
/// cycle (see [`KeyManager::refresh`]), signs tokens with the current key and
/// publishes the JWKS.
///
/// Every server process of a deployment may run one over the same store: each write
/// is idempotent or harmless when repeated, and every process picks the same key.
/// Call [`KeyManager::refresh`] at start-up and then periodically (every few minutes,
/// well within `publish_ahead` and `max_token_lifetime`).
pub struct KeyManager {
    store: Arc<dyn KeyStore>,
    master: MasterKey,
    policy: RotationPolicy,
    clock: Arc<dyn Clock>,
    ring: RwLock<Arc<KeyRing>>,
    writing: tokio::sync::Mutex<()>,
}

impl fmt::Debug for KeyManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyManager")
            .field("policy", &self.policy)
            .field("ring", &self.ring())
            .finish_non_exhaustive()
    }
}

/// One write the life cycle needs next.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// Create a key that signs from `activates_at`.
    Create { activates_at: DateTime<Utc> },
    /// Move the activation of a published key.
    Activate { kid: String, at: DateTime<Utc> },
    /// Retire a key that no longer signs.
    Retire { kid: String },
}

/// Whether a key is still published at `now`.
fn is_live(key: &KeyRecord, now: DateTime<Utc>) -> bool {
    key.expires_at.is_none_or(|e| e > now)
}

/// Whether a key has stopped signing at `now`.
fn is_retired(key: &KeyRecord, now: DateTime<Utc>) -> bool {
    key.retires_at.is_some_and(|r| r <= now)
}

/// The order keys take over in: by activation, then creation, then `kid`, so that
/// every process ranks them alike.
fn takeover_order(a: &KeyRecord, b: &KeyRecord) -> Ordering {
    (a.activates_at, a.created_at, &a.kid).cmp(&(b.activates_at, b.created_at, &b.kid))
}

/// The key that signs at `now` (the newest activated, unretired live key) and the
/// published keys waiting to sign, in takeover order.
fn classify(keys: &[KeyRecord], now: DateTime<Utc>) -> (Option<&KeyRecord>, Vec<&KeyRecord>) {
    let mut candidates: Vec<&KeyRecord> = keys
        .iter()
        .filter(|k| is_live(k, now) && !is_retired(k, now))
        .collect();
    candidates.sort_by(|a, b| takeover_order(a, b));
    let current = candidates
        .iter()
        .rev()
        .find(|k| k.activates_at <= now)
        .copied();
    let pending = candidates
        .into_iter()
        .filter(|k| k.activates_at > now)
        .collect();
    (current, pending)
}

/// The next write the life cycle needs, or `None` when the keys are in order:
///
/// 1. some key signs (if none does, the first published waiting key is promoted, or,
///    when there is none, a key is created that signs at once);
/// 2. every other activated key is retired;
/// 3. exactly one next key is scheduled: it signs from the later of `rotate_every`
///    after the current key started and `publish_ahead` after it was published.
fn next_step(keys: &[KeyRecord], now: DateTime<Utc>, policy: &RotationPolicy) -> Option<Step> {
    let (current, pending) = classify(keys, now);
    let Some(current) = current else {
        return Some(match pending.first() {
            Some(next) => Step::Activate {
                kid: next.kid.clone(),
                at: now,
            },
            None => Step::Create { activates_at: now },
        });
    };
    let superseded = keys.iter().find(|k| {
        k.kid != current.kid && is_live(k, now) && !is_retired(k, now) && k.activates_at <= now
    });
    if let Some(old) = superseded {
        return Some(Step::Retire {
            kid: old.kid.clone(),
        });
    }
    let rotation_due = current.activates_at + policy.rotate_every;
    let Some(next) = pending.first() else {
        return Some(Step::Create {
            activates_at: rotation_due.max(now + policy.publish_ahead),
        });
    };
    let scheduled = rotation_due
        .max(next.created_at + policy.publish_ahead)
        .max(now);
    (next.activates_at != scheduled).then(|| Step::Activate {
        kid: next.kid.clone(),
        at: scheduled,
    })
}

impl KeyManager {
    /// A manager over `store`, sealing keys with `master`. Holds no key until the first
    /// [`KeyManager::refresh`]. `InvalidInput` when the policy is invalid (see
    /// [`RotationPolicy::validate`]).
    pub fn new(
        store: Arc<dyn KeyStore>,
        master: MasterKey,
        policy: RotationPolicy,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        policy.validate()?;
        Ok(Self {
            store,
            master,
            policy,
            clock,
            ring: RwLock::new(Arc::new(KeyRing::empty())),
            writing: tokio::sync::Mutex::new(()),
        })
    }

    /// The rotation policy.
    #[must_use]
    pub fn policy(&self) -> &RotationPolicy {
        &self.policy
    }

    /// Loads the keys, keeps their life cycle and swaps in a new [`KeyRing`]:
    ///
    /// - with no key at all (first start), creates one that signs at once: nothing was
    ///   signed before, so no verifier can be waiting for it;
    /// - keeps exactly one next key published, scheduled to sign `rotate_every` after
    ///   the current key started (and never less than `publish_ahead` after it was
    ///   published); when its time comes it signs, and the key before it is retired:
    ///   it stays published for `max_token_lifetime`, then is purged.
    ///
    /// Two processes refreshing at once may create two next keys; that is harmless
    /// (the second waits for the following rotation) and both pick the same signing
    /// key. On error the previous ring stays in place.
    pub async fn refresh(&self) -> Result<()> {
        let _writing = self.writing.lock().await;
        let now = self.clock.now();
        let keys = self.converge(now).await?;
        self.purge_and_install(keys, now).await
    }

    /// Rotates now (for `tenancy keys rotate`): the published next key signs from now
    /// on, the current key is retired (still published for `max_token_lifetime`), and a
    /// new next key is published. A key is thus always in the JWKS before it signs.
    pub async fn rotate_now(&self) -> Result<()> {
        let _writing = self.writing.lock().await;
        let now = self.clock.now();
        let keys = self.converge(now).await?;
        let (current, pending) = classify(&keys, now);
        let (Some(current), Some(next)) = (current, pending.first()) else {
            return Err(Error::Internal(
                "the signing keys are not in order: no current and next key".into(),
            ));
        };
        // Promote first: should the retirement fail, two keys sign and the next
        // refresh retires the older one.
        tolerate_gone(self.store.activate_key(&next.kid, now).await)?;
        tolerate_gone(
            self.store
                .retire_key(&current.kid, now, now + self.policy.max_token_lifetime)
                .await,
        )?;
        tracing::info!(retired = %current.kid, signing = %next.kid, "rotated the signing key");
        let keys = self.converge(now).await?;
        self.purge_and_install(keys, now).await
    }

    /// The current snapshot of the keys.
    #[must_use]
    pub fn ring(&self) -> Arc<KeyRing> {
        Arc::clone(&self.ring.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The published key set (for `/.well-known/jwks.json`).
    #[must_use]
    pub fn jwks(&self) -> Jwks {
        self.ring().jwks().clone()
    }

    /// Signs `claims` with the current key; the header carries `kid`, `alg` and `typ`
    /// ([`TYP_ACCESS_TOKEN`] for access tokens, [`TYP_ID_TOKEN`] for ID tokens).
    /// `Unavailable` before the first successful refresh.
    pub fn sign<T: Serialize>(&self, typ: &str, claims: &T) -> Result<String> {
        let ring = self.ring();
        let key = ring.signing_key(self.clock.now()).ok_or_else(|| {
            Error::Unavailable("no signing key yet: the key manager was never refreshed".into())
        })?;
        key.sign(typ, claims)
    }

    /// Applies life-cycle steps until the keys are in order; returns them.
    async fn converge(&self, now: DateTime<Utc>) -> Result<Vec<KeyRecord>> {
        let mut keys = self.store.keys().await?;
        for _ in 0..MAX_STEPS {
            let Some(step) = next_step(&keys, now, &self.policy) else {
                return Ok(keys);
            };
            self.apply(&step, now).await?;
            keys = self.store.keys().await?;
        }
        tracing::warn!(
            "signing keys still changing after {MAX_STEPS} steps; using them as they are"
        );
        Ok(keys)
    }

    async fn apply(&self, step: &Step, now: DateTime<Utc>) -> Result<()> {
        match step {
            Step::Create { activates_at } => {
                let record =
                    keys::new_record(self.policy.algorithm, &self.master, now, *activates_at)?;
                self.store.insert_key(&record).await?;
                tracing::info!(kid = %record.kid, alg = %record.alg, %activates_at, "created a signing key");
            }
            Step::Activate { kid, at } => {
                tolerate_gone(self.store.activate_key(kid, *at).await)?;
                tracing::info!(%kid, %at, "scheduled a signing key");
            }
            Step::Retire { kid } => {
                let expires_at = now + self.policy.max_token_lifetime;
                tolerate_gone(self.store.retire_key(kid, now, expires_at).await)?;
                tracing::info!(%kid, %expires_at, "retired a signing key");
            }
        }
        Ok(())
    }

    /// Purges expired keys and swaps in the ring built from the live ones of `keys`.
    async fn purge_and_install(&self, mut keys: Vec<KeyRecord>, now: DateTime<Utc>) -> Result<()> {
        let purged = self.store.purge_keys(now).await?;
        if purged > 0 {
            tracing::info!(purged, "purged expired signing keys");
        }
        keys.retain(|k| is_live(k, now));
        keys.sort_by(takeover_order);
        let mut signers = Vec::new();
        for key in keys.iter().filter(|k| !is_retired(k, now)) {
            signers.push(Signer {
                activates_at: key.activates_at,
                retires_at: key.retires_at,
                key: SigningKey::from_record(key, &self.master)?,
            });
        }
        let jwks = Jwks {
            keys: keys.iter().map(|k| k.public_jwk.clone()).collect(),
        };
        let ring = Arc::new(KeyRing::new(signers, jwks));
        *self.ring.write().unwrap_or_else(PoisonError::into_inner) = ring;
        Ok(())
    }
}

/// Treats `NotFound` as done: another process purged or changed the key meanwhile.
fn tolerate_gone(result: Result<()>) -> Result<()> {
    match result {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;
    use crate::ErrorKind;
    use crate::clock::ManualClock;
    use crate::memory::MemoryStore;

    struct Fixture {
        clock: Arc<ManualClock>,
        store: Arc<MemoryStore>,
        master: MasterKey,
        manager: KeyManager,
    }

    fn start() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap()
    }

    fn fixture() -> Fixture {
        let clock = Arc::new(ManualClock::new(start()));
        let store = Arc::new(MemoryStore::new());
        let master = MasterKey::generate().unwrap();
        let manager = KeyManager::new(
            store.clone(),
            master.clone(),
            RotationPolicy::default(),
            clock.clone(),
        )
        .unwrap();
        Fixture {
            clock,
            store,
            master,
            manager,
        }
    }

    impl Fixture {
        fn signing_kid(&self) -> String {
            self.manager
                .ring()
                .signing_key(self.clock.now())
                .unwrap()
                .kid()
                .to_owned()
        }

        fn published(&self) -> Vec<String> {
            self.manager
                .jwks()
                .keys
                .iter()
                .map(|k| k["kid"].as_str().unwrap().to_owned())
                .collect()
        }

        async fn record(&self, kid: &str) -> KeyRecord {
            self.store
                .keys()
                .await
                .unwrap()
                .into_iter()
                .find(|k| k.kid == kid)
                .unwrap()
        }

        fn another_manager(&self) -> KeyManager {
            KeyManager::new(
                self.store.clone(),
                self.master.clone(),
                RotationPolicy::default(),
                self.clock.clone(),
            )
            .unwrap()
        }
    }

    #[tokio::test]
    async fn nothing_signs_before_the_first_refresh() {
        let f = fixture();
        let err = f.manager.sign(TYP_ID_TOKEN, &json!({})).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert!(f.manager.jwks().keys.is_empty());
    }

    #[tokio::test]
    async fn first_refresh_creates_a_signing_key_and_publishes_the_next_one() {
        let f = fixture();
        f.manager.refresh().await.unwrap();
        let keys = f.store.keys().await.unwrap();
        assert_eq!(keys.len(), 2);
        let current = f.signing_kid();
        let first = f.record(&current).await;
        assert_eq!(first.activates_at, start());
        let next = keys.iter().find(|k| k.kid != current).unwrap();
        assert_eq!(next.created_at, start());
        assert_eq!(next.activates_at, start() + Duration::days(30));
        assert_eq!(f.published(), [current.clone(), next.kid.clone()]);

        let token = f
            .manager
            .sign(TYP_ACCESS_TOKEN, &json!({"sub": "x"}))
            .unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.kid.as_deref(), Some(current.as_str()));
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);

        // Refreshing again changes nothing.
        f.manager.refresh().await.unwrap();
        assert_eq!(f.store.keys().await.unwrap(), keys);
        assert_eq!(f.signing_kid(), current);
    }

    #[tokio::test]
    async fn the_next_key_takes_over_on_schedule_and_the_old_one_expires() {
        let f = fixture();
        f.manager.refresh().await.unwrap();
        let first = f.signing_kid();
        let (second, _) = f
            .published()
            .into_iter()
            .partition::<Vec<_>, _>(|k| *k != first);
        let second = second[0].clone();

        f.clock.advance(Duration::days(30) - Duration::seconds(1));
        assert_eq!(f.signing_kid(), first);
        // The ring switches on time, even before the next refresh.
        f.clock.advance(Duration::seconds(1));
        assert_eq!(f.signing_kid(), second);

        f.manager.refresh().await.unwrap();
        let now = f.clock.now();
        let old = f.record(&first).await;
        assert_eq!(old.retires_at, Some(now));
        assert_eq!(old.expires_at, Some(now + Duration::hours(1)));
        let third: Vec<_> = f
            .store
            .keys()
            .await
            .unwrap()
            .into_iter()
            .filter(|k| k.kid != first && k.kid != second)
            .collect();
        assert_eq!(third.len(), 1);
        assert_eq!(third[0].activates_at, now + Duration::days(30));
        assert_eq!(
            f.published(),
            [first.clone(), second.clone(), third[0].kid.clone()]
        );

        f.clock.advance(Duration::hours(1) + Duration::seconds(1));
        f.manager.refresh().await.unwrap();
        assert!(
            f.store.keys().await.unwrap().iter().all(|k| k.kid != first),
            "purged"
        );
        assert_eq!(f.published(), [second.clone(), third[0].kid.clone()]);
        assert_eq!(f.signing_kid(), second);
    }

    #[tokio::test]
    async fn rotate_now_promotes_the_published_next_key() {
        let f = fixture();
        f.manager.refresh().await.unwrap();
        let first = f.signing_kid();
        let next = f.published().into_iter().find(|k| *k != first).unwrap();
        f.clock.advance(Duration::days(2));

        f.manager.rotate_now().await.unwrap();
        let now = f.clock.now();
        assert_eq!(f.signing_kid(), next);
        assert_eq!(f.record(&next).await.activates_at, now);
        assert_eq!(f.record(&first).await.retires_at, Some(now));
        let newest = f
            .store
            .keys()
            .await
            .unwrap()
            .into_iter()
            .find(|k| k.kid != first && k.kid != next)
            .unwrap();
        assert_eq!(newest.activates_at, now + Duration::days(30));
        assert!(f.published().contains(&newest.kid));

        // Twice in a row works too: the key published by the first rotation signs.
        f.manager.rotate_now().await.unwrap();
        assert_eq!(f.signing_kid(), newest.kid);
    }

    #[tokio::test]
    async fn managers_racing_over_one_store_agree_on_the_signing_key() {
        let f = fixture();
        // Two processes that both found no key each created one that signs at once.
        for _ in 0..2 {
            let key = keys::new_record(Algorithm::Es256, &f.master, start(), start()).unwrap();
            f.store.insert_key(&key).await.unwrap();
        }
        let other = f.another_manager();
        f.manager.refresh().await.unwrap();
        other.refresh().await.unwrap();
        let kid = f.signing_kid();
        assert_eq!(other.ring().signing_key(f.clock.now()).unwrap().kid(), kid);
        let keys = f.store.keys().await.unwrap();
        assert_eq!(keys.len(), 3, "two first keys and one next key");
        assert_eq!(keys.iter().filter(|k| k.retires_at.is_some()).count(), 1);

        // A second next key (another race) is left alone and waits its turn.
        let extra = keys::new_record(
            Algorithm::Es256,
            &f.master,
            start(),
            start() + Duration::hours(2),
        )
        .unwrap();
        f.store.insert_key(&extra).await.unwrap();
        other.refresh().await.unwrap();
        assert_eq!(f.store.keys().await.unwrap().len(), 4);
        assert_eq!(other.ring().signing_key(f.clock.now()).unwrap().kid(), kid);
    }

    #[tokio::test]
    async fn a_wrong_master_key_fails_refresh_and_keeps_the_ring() {
        let f = fixture();
        f.manager.refresh().await.unwrap();
        let kid = f.signing_kid();
        let stranger = KeyManager::new(
            f.store.clone(),
            MasterKey::generate().unwrap(),
            RotationPolicy::default(),
            f.clock.clone(),
        )
        .unwrap();
        let err = stranger.refresh().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Internal);
        assert!(err.to_string().contains("master key"), "{err}");
        assert!(stranger.ring().signing_key(f.clock.now()).is_none());
        f.manager.refresh().await.unwrap();
        assert_eq!(f.signing_kid(), kid);
    }

    #[test]
    fn a_shorter_rotation_period_reschedules_the_next_key() {
        let master = MasterKey::generate().unwrap();
        let t0 = start();
        let current = keys::new_record(Algorithm::Es256, &master, t0, t0).unwrap();
        let next =
            keys::new_record(Algorithm::Es256, &master, t0, t0 + Duration::days(30)).unwrap();
        let policy = RotationPolicy {
            rotate_every: Duration::days(7),
            ..RotationPolicy::default()
        };
        let keys = vec![current, next.clone()];
        assert_eq!(
            next_step(&keys, t0, &policy),
            Some(Step::Activate {
                kid: next.kid.clone(),
                at: t0 + Duration::days(7)
            })
        );
        // Overdue: it signs at once.
        let late = t0 + Duration::days(8);
        assert_eq!(
            next_step(&keys, late, &policy),
            Some(Step::Activate {
                kid: next.kid,
                at: late
            })
        );
        assert_eq!(next_step(&keys, t0, &RotationPolicy::default()), None);
    }

    #[test]
    fn invalid_policies_name_their_field() {
        let bad = [
            (
                RotationPolicy {
                    rotate_every: Duration::zero(),
                    ..RotationPolicy::default()
                },
                "rotate_every",
            ),
            (
                RotationPolicy {
                    publish_ahead: Duration::seconds(-1),
                    ..RotationPolicy::default()
                },
                "publish_ahead",
            ),
            (
                RotationPolicy {
                    max_token_lifetime: Duration::zero(),
                    ..RotationPolicy::default()
                },
                "max_token_lifetime",
            ),
            (
                RotationPolicy {
                    publish_ahead: Duration::days(31),
                    ..RotationPolicy::default()
                },
                "publish_ahead",
            ),
        ];
        for (policy, field) in bad {
            assert_eq!(policy.validate().unwrap_err().field(), Some(field));
        }
        assert!(RotationPolicy::default().validate().is_ok());
    }
}
