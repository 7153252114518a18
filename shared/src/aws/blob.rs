//! One bounded GET of a blob URL (the presigned S3 URL GetDownloadUrlForLayer
//! hands out), on the SDK's own HTTP stack (hyper with rustls/ring), so the
//! binary links no second TLS implementation.
//!
//! Bounded three ways: the whole fetch has a deadline, the body stops being
//! read past `max_bytes`, and only `https://` URLs are fetched, except plain
//! `http://` to a loopback host (a registry mirror or emulator on the same
//! machine): a URL from the network is never fetched in the clear.

use std::sync::OnceLock;
use std::time::Duration;

use aws_smithy_async::rt::sleep::TokioSleep;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use aws_smithy_http_client::Connector;
use aws_smithy_runtime_api::client::http::{HttpConnector, HttpConnectorSettings};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_types::byte_stream::ByteStream;

/// The whole GET, connect to last byte.
pub const BLOB_DEADLINE: Duration = Duration::from_secs(10);

/// Why a blob could not be read.
#[derive(Debug, PartialEq, Eq)]
pub struct BlobError {
    pub message: String,
    /// A timeout, a connection failure or a 5xx: worth another try later.
    pub retryable: bool,
}

impl BlobError {
    fn new(message: impl Into<String>, retryable: bool) -> Self {
        BlobError { message: message.into(), retryable }
    }
}

/// Lazily built: most invocations never read a blob, and building loads the
/// trust store.
#[derive(Default)]
pub struct BlobClient {
    connector: OnceLock<Connector>,
}

impl BlobClient {
    fn connector(&self) -> &Connector {
        self.connector.get_or_init(|| {
            let settings = HttpConnectorSettings::builder()
                .connect_timeout(Duration::from_secs(3))
                .read_timeout(Duration::from_secs(5))
                .build();
            Connector::builder()
                .tls_provider(Provider::Rustls(CryptoMode::Ring))
                .connector_settings(settings)
                .sleep_impl(TokioSleep::new())
                .build()
        })
    }

    /// The body, or `Ok(None)` when it is larger than `max_bytes` (by its
    /// Content-Length or by what arrives).
    pub async fn get(&self, url: &str, max_bytes: u64) -> Result<Option<Vec<u8>>, BlobError> {
        check_url(url)?;
        match tokio::time::timeout(BLOB_DEADLINE, self.fetch(url, max_bytes)).await {
            Ok(result) => result,
            Err(_) => Err(BlobError::new(format!("no complete answer within {}s", BLOB_DEADLINE.as_secs()), true)),
        }
    }

    async fn fetch(&self, url: &str, max_bytes: u64) -> Result<Option<Vec<u8>>, BlobError> {
        let request = HttpRequest::get(url).map_err(|e| BlobError::new(format!("invalid URL: {e}"), false))?;
        let response = self
            .connector()
            .call(request)
            .await
            .map_err(|e| BlobError::new(format!("request failed: {}", super::error_chain(&e)), true))?;
        let status = response.status();
        if !status.is_success() {
            // 429 (S3 and CloudFront slow down) and 5xx pass; 403 (an
            // expired URL) and other 4xx do not.
            let transient = status.is_server_error() || status.as_u16() == 429;
            return Err(BlobError::new(format!("HTTP {}", status.as_u16()), transient));
        }
        let declared = response.headers().get("content-length").and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > max_bytes) {
            return Ok(None);
        }
        let mut stream = ByteStream::new(response.into_body());
        let mut bytes = Vec::new();
        while let Some(chunk) = stream
            .try_next()
            .await
            .map_err(|e| BlobError::new(format!("reading the body: {}", super::error_chain(&e)), true))?
        {
            if (bytes.len() + chunk.len()) as u64 > max_bytes {
                return Ok(None);
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Some(bytes))
    }
}

/// `https://` anywhere; `http://` only to a loopback host.
pub fn check_url(url: &str) -> Result<(), BlobError> {
    let refuse = |why: &str| Err(BlobError::new(format!("refused blob URL: {why}"), false));
    if url.starts_with("https://") {
        return Ok(());
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return refuse("not an https URL");
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let authority = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        authority.split(':').next().unwrap_or_default()
    };
    let loopback =
        host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(())
    } else {
        refuse("plain http is allowed only to a loopback host")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_anywhere_http_only_on_loopback() {
        assert!(check_url("https://prod-us-east-1-starport-layer-bucket.s3.us-east-1.amazonaws.com/x?sig=1").is_ok());
        assert!(check_url("http://127.0.0.1:5000/blob").is_ok());
        assert!(check_url("http://localhost/blob").is_ok());
        assert!(check_url("http://[::1]:80/blob").is_ok());
        for bad in [
            "http://example.com/blob",
            "http://127.0.0.1.example.com/blob",
            "http://user@10.0.0.1/blob",
            "ftp://127.0.0.1/blob",
            "file:///etc/passwd",
        ] {
            let error = check_url(bad).expect_err(bad);
            assert!(!error.retryable && error.message.starts_with("refused blob URL"), "{bad}");
        }
    }

    /// A tiny one-shot HTTP server on loopback answering `body` with `status`.
    async fn serve_once(status: &str, body: Vec<u8>) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let head = format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len());
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut request = [0u8; 2048];
            let _ = socket.read(&mut request).await;
            let _ = socket.write_all(head.as_bytes()).await;
            let _ = socket.write_all(&body).await;
        });
        format!("http://127.0.0.1:{port}/v2/blob")
    }

    #[tokio::test]
    async fn a_small_blob_is_read_and_a_large_one_is_not() {
        let client = BlobClient::default();
        let url = serve_once("200 OK", br#"{"architecture":"arm64","os":"linux"}"#.to_vec()).await;
        let bytes = client.get(&url, 1024).await.expect("read").expect("small enough");
        assert!(bytes.starts_with(b"{\"architecture\""));
        let url = serve_once("200 OK", vec![b' '; 4096]).await;
        assert_eq!(client.get(&url, 1024).await, Ok(None));
        let url = serve_once("403 Forbidden", b"expired".to_vec()).await;
        let error = client.get(&url, 1024).await.expect_err("403");
        assert_eq!(error, BlobError { message: "HTTP 403".into(), retryable: false });
        for (status, retryable) in [("429 Too Many Requests", true), ("503 Slow Down", true), ("404 Not Found", false)]
        {
            let url = serve_once(status, Vec::new()).await;
            let error = client.get(&url, 1024).await.expect_err(status);
            assert_eq!(error.retryable, retryable, "{status}");
        }
    }
}
