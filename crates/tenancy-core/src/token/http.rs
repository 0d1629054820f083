//! [`HttpJwks`]: the issuer's JWKS fetched over HTTPS (feature `jwks-http`).

use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::ACCEPT;
use url::{Host, Url};

use super::jwks::Jwks;
use super::verifier::JwksSource;
use crate::error::{Error, Result};

/// The largest key set accepted, in bytes.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// A [`JwksSource`] that GETs a `jwks_uri` (wrap it in a [`super::CachedJwks`]).
///
/// The URL must be `https`, except on a loopback host (`localhost`, `127.0.0.1`,
/// `[::1]`) for development. Requests time out after 10 s, redirects are not followed,
/// and bodies over 256 KiB are refused; every failure is `Unavailable`.
#[derive(Debug, Clone)]
pub struct HttpJwks {
    client: reqwest::Client,
    url: Url,
}

impl HttpJwks {
    /// A source for `url`; `InvalidInput` on field `jwks_url` when it is not an absolute
    /// `https` URL (or `http` on a loopback host).
    pub fn new(url: &str) -> Result<Self> {
        let invalid = |reason: String| Error::invalid("jwks_url", reason);
        let parsed = Url::parse(url)
            .map_err(|e| invalid(format!("`{}` is not a url: {e}", url.escape_default())))?;
        let loopback = match parsed.host() {
            Some(Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
            Some(Host::Ipv4(ip)) => ip.is_loopback(),
            Some(Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        };
        match parsed.scheme() {
            "https" => {}
            "http" if loopback => {}
            _ => {
                return Err(invalid(format!(
                    "`{}` must use https (plain http only on a loopback host)",
                    url.escape_default()
                )));
            }
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::Internal(format!("cannot build an http client: {e}")))?;
        Ok(Self {
            client,
            url: parsed,
        })
    }

    /// The URL fetched.
    #[must_use]
    pub fn url(&self) -> &Url {
        &self.url
    }

    fn unavailable(&self, reason: impl std::fmt::Display) -> Error {
        Error::Unavailable(format!("cannot fetch the jwks at `{}`: {reason}", self.url))
    }
}

#[async_trait]
impl JwksSource for HttpJwks {
    async fn fetch(&self) -> Result<Jwks> {
        let mut response = self
            .client
            .get(self.url.clone())
            .header(ACCEPT, "application/jwk-set+json, application/json")
            .send()
            .await
            .map_err(|e| self.unavailable(e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(self.unavailable(format!("status {status}")));
        }
        if response
            .content_length()
            .is_some_and(|len| len > MAX_JWKS_BYTES as u64)
        {
            return Err(self.unavailable("the body is too large"));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.unavailable(e))? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(self.unavailable("the body is too large"));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body)
            .map_err(|e| self.unavailable(format!("not a json key set: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::ErrorKind;

    /// Serves one canned HTTP response per connection; returns the base URL.
    async fn serve(status: &'static str, body: String) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut request = [0_u8; 2048];
                let _ = socket.read(&mut request).await;
                let response = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            }
        });
        format!("http://{addr}/jwks.json")
    }

    #[tokio::test]
    async fn fetches_a_key_set_and_reports_failures_as_unavailable() {
        let url = serve(
            "200 OK",
            r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"AA","kid":"k"}]}"#.into(),
        )
        .await;
        let jwks = HttpJwks::new(&url).unwrap().fetch().await.unwrap();
        assert_eq!(jwks.keys.len(), 1);

        let url = serve("404 Not Found", "{}".into()).await;
        let err = HttpJwks::new(&url).unwrap().fetch().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert!(err.to_string().contains("404"), "{err}");

        let url = serve("200 OK", "not json".into()).await;
        let err = HttpJwks::new(&url).unwrap().fetch().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);

        let url = serve(
            "200 OK",
            format!(r#"{{"keys":[],"pad":"{}"}}"#, "x".repeat(MAX_JWKS_BYTES)),
        )
        .await;
        let err = HttpJwks::new(&url).unwrap().fetch().await.unwrap_err();
        assert!(err.to_string().contains("too large"), "{err}");
    }

    #[test]
    fn urls_must_be_https_unless_loopback() {
        assert!(HttpJwks::new("https://id.example.com/.well-known/jwks.json").is_ok());
        assert!(HttpJwks::new("http://localhost:3000/jwks").is_ok());
        assert!(HttpJwks::new("http://[::1]/jwks").is_ok());
        for bad in [
            "http://id.example.com/jwks",
            "ftp://x/jwks",
            "not a url",
            "/jwks",
        ] {
            let err = HttpJwks::new(bad).unwrap_err();
            assert_eq!(err.field(), Some("jwks_url"), "{bad}");
        }
    }
}
