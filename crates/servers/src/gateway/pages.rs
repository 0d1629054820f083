//! The server-rendered pages of the gateway: login, organization picker, consent, error
//! and signed-out. Plain HTML and CSS, no JavaScript; every value is HTML-escaped.

use std::fmt::Write as _;

use tenancy_core::identity::Tenant;
use tenancy_core::oauth::Scopes;

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;background:#f4f5f7;margin:0}\
main{max-width:24rem;margin:4rem auto;background:#fff;padding:2rem;border-radius:8px;\
box-shadow:0 1px 4px rgba(0,0,0,.1)}h1{font-size:1.3rem;margin-top:0}\
label{display:block;margin:.8rem 0 .2rem}input[type=email],input[type=password]{width:100%;\
padding:.5rem;box-sizing:border-box}button{margin-top:1rem;padding:.5rem 1rem;cursor:pointer}\
.error{color:#a00;background:#fee;padding:.5rem;border-radius:4px}ul{padding-left:1.2rem}\
.orgs button{display:block;width:100%;text-align:left;margin:.4rem 0}";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<title>{}</title><style>{STYLE}</style></head><body><main>{body}</main></body></html>",
        escape(title)
    )
}

fn hidden(request: &str, csrf: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"request\" value=\"{}\">\
<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        escape(request),
        escape(csrf)
    )
}

/// The login form, posting to `/login`.
pub fn login(
    client: &str,
    request: &str,
    csrf: &str,
    hint: Option<&str>,
    error: Option<&str>,
) -> String {
    let mut body = format!("<h1>Sign in to continue to {}</h1>", escape(client));
    if let Some(error) = error {
        let _ = write!(
            body,
            "<p class=\"error\" role=\"alert\">{}</p>",
            escape(error)
        );
    }
    let _ = write!(
        body,
        "<form method=\"post\" action=\"/login\">{}\
<label for=\"email\">Email</label><input id=\"email\" type=\"email\" name=\"email\" value=\"{}\" required autocomplete=\"username\">\
<label for=\"password\">Password</label><input id=\"password\" type=\"password\" name=\"password\" required autocomplete=\"current-password\">\
<button type=\"submit\">Sign in</button></form>",
        hidden(request, csrf),
        escape(hint.unwrap_or(""))
    );
    page("Sign in", &body)
}

/// The organization picker, posting to `/authorize/organization`.
pub fn choose_tenant(client: &str, request: &str, csrf: &str, tenants: &[Tenant]) -> String {
    let mut body = format!(
        "<h1>Choose an organization</h1><p>{} will act in the organization you choose.</p>\
<form method=\"post\" action=\"/authorize/organization\" class=\"orgs\">{}",
        escape(client),
        hidden(request, csrf)
    );
    for tenant in tenants {
        let _ = write!(
            body,
            "<button type=\"submit\" name=\"tenant_id\" value=\"{}\">{} <small>({})</small></button>",
            tenant.id,
            escape(tenant.display_name.as_str()),
            escape(tenant.slug.as_str())
        );
    }
    body.push_str("</form>");
    page("Choose an organization", &body)
}

/// The consent form, posting to `/consent`.
pub fn consent(
    client: &str,
    tenant: &Tenant,
    scopes: &Scopes,
    request: &str,
    csrf: &str,
) -> String {
    let mut body = format!(
        "<h1>Allow {} access?</h1><p>Organization: <strong>{}</strong></p><p>It asks for:</p><ul>",
        escape(client),
        escape(tenant.display_name.as_str())
    );
    for scope in scopes.iter() {
        let _ = write!(body, "<li>{}</li>", escape(describe_scope(scope)));
    }
    let _ = write!(
        body,
        "</ul><form method=\"post\" action=\"/consent\">{}\
<button type=\"submit\" name=\"decision\" value=\"allow\">Allow</button> \
<button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button></form>",
        hidden(request, csrf)
    );
    page("Allow access", &body)
}

fn describe_scope(scope: &str) -> &str {
    match scope {
        "openid" => "sign you in (your user id)",
        "profile" => "your name",
        "email" => "your email address",
        "offline_access" => "stay signed in (refresh tokens)",
        other => other,
    }
}

/// An error page (the request cannot be sent back to the client).
pub fn error(message: &str) -> String {
    page(
        "Error",
        &format!(
            "<h1>This request cannot be completed</h1><p class=\"error\">{}</p>",
            escape(message)
        ),
    )
}

/// The page after a logout without a redirect.
pub fn signed_out() -> String {
    page("Signed out", "<h1>You are signed out</h1>")
}
