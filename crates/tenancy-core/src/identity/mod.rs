//! Identity: tenants (organizations), users (global identities), memberships with
//! roles, invitations and email verification.
//!
//! [`Identity`] is the API to embed; it validates input and calls an [`IdentityStore`]:
//! [`crate::memory::MemoryStore`], or the SQLite and PostgreSQL stores behind the
//! `sqlite` and `postgres` features.

mod model;
mod password;
mod service;
mod store;
mod token;

pub use model::{
    DisplayName, Email, EmailVerification, Invitation, MAX_JSON_BYTES, MAX_ROLES, Membership,
    RoleName, Slug, Tenant, TenantStatus, User, UserStatus, validate_json_object,
};
pub use password::{MAX_PASSWORD_BYTES, MIN_PASSWORD_CHARS, PasswordHash, verify_password};
pub use service::{
    DEFAULT_INVITATION_TTL, DEFAULT_VERIFICATION_TTL, Identity, MAX_TOKEN_TTL, NewTenant, NewUser,
    TenantChanges, UserChanges,
};
pub(crate) use store::check_usable;
pub use store::{
    IdentityStore, InvitationStore, MembershipStore, TenantStore, UserStore, VerificationStore,
};
pub use token::{SecretToken, TokenHash};
