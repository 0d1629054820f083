//! Embeds tenancy with the in-memory backend: creates a tenant and two users, makes one
//! an admin, invites the other, and lists who belongs where.
//!
//! Run with `cargo run --example quickstart`.

use std::sync::Arc;

use tenancy::core::identity::{DEFAULT_INVITATION_TTL, Identity, NewTenant, NewUser};
use tenancy::core::memory::MemoryStore;
use tenancy::core::page::PageRequest;

#[tokio::main(flavor = "current_thread")]
async fn main() -> tenancy::Result<()> {
    // Any `IdentityStore` works here: SQLite or PostgreSQL in production.
    let identity = Identity::new(Arc::new(MemoryStore::new()));

    let acme = identity
        .create_tenant(NewTenant {
            slug: "acme".into(),
            display_name: "Acme Corporation".into(),
            metadata: serde_json::json!({ "plan": "pro" }),
        })
        .await?;
    let alice = identity
        .create_user(NewUser {
            email: "alice@acme.test".into(),
            display_name: "Alice".into(),
            password: Some("correct horse battery staple".into()),
            ..Default::default()
        })
        .await?;
    let bob = identity
        .create_user(NewUser {
            email: "bob@acme.test".into(),
            display_name: "Bob".into(),
            ..Default::default()
        })
        .await?;

    identity.add_member(acme.id, alice.id, &["admin"]).await?;
    // Bob joins through an invitation: the token is shown once (mail it to him).
    let (_invitation, token) = identity
        .invite(
            acme.id,
            "bob@acme.test",
            &["editor"],
            DEFAULT_INVITATION_TTL,
        )
        .await?;
    identity
        .accept_invitation(acme.id, token.expose(), bob.id)
        .await?;

    let signed_in = identity
        .authenticate("alice@acme.test", "correct horse battery staple")
        .await?;
    println!(
        "signed in: {} <{}>",
        signed_in.display_name, signed_in.email
    );

    println!("members of {} ({}):", acme.display_name, acme.slug);
    for m in identity
        .list_members(acme.id, &PageRequest::first(100))
        .await?
        .items
    {
        let user = identity.user(m.user_id).await?;
        let roles: Vec<&str> = m.roles.iter().map(|r| r.as_str()).collect();
        println!(
            "  {:<8} {:<16} {}",
            user.display_name,
            user.email,
            roles.join(", ")
        );
    }
    Ok(())
}
