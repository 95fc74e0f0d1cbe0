//! Actions beside the `train.requests` record: a webhook POST with retries and an idempotency
//! key, and a Kubernetes Job created from a template (`template.rs`) through the Kubernetes API
//! (or, in dry-run mode, printed).

use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use tributary_core::schema::triggers::{KubernetesJobDecl, WebhookDecl};

use crate::config::KubernetesSettings;
use crate::template::JobTemplate;

/// An action to run for a request, kept in the trigger's state until it succeeded (so a restart
/// retries it; the idempotency key lets the receiver drop a repeat).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct PendingAction {
    pub(crate) request_id: String,
    pub(crate) kind: ActionKind,
    /// The request as JSON (the webhook body, the template's values).
    pub(crate) request: serde_json::Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ActionKind {
    Webhook,
    KubernetesJob,
}

/// Posts the request to the webhook, retrying failures (connection errors, 5xx, 429) with
/// backoff; every attempt carries `Idempotency-Key: <request id>`.
pub(crate) async fn webhook(
    client: &reqwest::Client,
    decl: &WebhookDecl,
    allowed_env: &[String],
    action: &PendingAction,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let mut backoff = Duration::from_secs(1);
    let mut last_error = String::new();
    for attempt in 1..=decl.max_attempts.max(1) {
        let mut request = client
            .post(&decl.url)
            .header("Idempotency-Key", &action.request_id)
            .json(&action.request);
        for (k, v) in &decl.headers {
            request = request.header(k, resolve(v, allowed_env)?);
        }
        match request.send().await {
            Ok(r) if r.status().is_success() => {
                info!(request_id = %action.request_id, attempt, "webhook delivered");
                return Ok(());
            }
            // The client follows no redirect: the URL must be the final one.
            Ok(r) if r.status().is_redirection() => bail!(
                "webhook {} answered {} (redirects are not followed: configure the final URL)",
                decl.url,
                r.status()
            ),
            Ok(r)
                if r.status().is_client_error()
                    && r.status() != reqwest::StatusCode::TOO_MANY_REQUESTS =>
            {
                bail!("webhook {} refused the request: {}", decl.url, r.status());
            }
            Ok(r) => last_error = r.status().to_string(),
            Err(e) => last_error = e.to_string(),
        }
        warn!(request_id = %action.request_id, attempt, error = %last_error, "webhook failed; retrying");
        tokio::select! {
            () = shutdown.cancelled() => bail!("shutting down"),
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(60));
    }
    bail!(
        "webhook {} failed {} times: {last_error}",
        decl.url,
        decl.max_attempts
    )
}

/// The variable a header value expands (`{env:NAME}`), if any.
fn env_name(value: &str) -> Option<&str> {
    value
        .strip_prefix("{env:")
        .and_then(|v| v.strip_suffix('}'))
}

/// Checks, at start-up, that every `{env:NAME}` of a webhook's headers is allowed.
pub(crate) fn check_webhook_env(decl: &WebhookDecl, allowed: &[String]) -> anyhow::Result<()> {
    for (header, value) in &decl.headers {
        if let Some(name) = env_name(value)
            && !allowed.iter().any(|a| a == name)
        {
            bail!(
                "webhook header {header} expands {{env:{name}}}, which train_trigger.webhook_env does not list"
            );
        }
    }
    Ok(())
}

/// `{env:NAME}` is the variable's value (only a variable `allowed` lists); anything else is
/// itself.
fn resolve(value: &str, allowed: &[String]) -> anyhow::Result<String> {
    match env_name(value) {
        Some(name) if allowed.iter().any(|a| a == name) => {
            std::env::var(name).with_context(|| format!("environment variable {name}"))
        }
        Some(name) => bail!("environment variable {name} is not in train_trigger.webhook_env"),
        None => Ok(value.to_string()),
    }
}

/// Creates the Job through the Kubernetes API, or prints it in dry-run mode. A Job that already
/// exists (a retry after a crash) counts as created. The manifest is the template (parsed at
/// start-up) with the request's values filled in; one that is not a valid Job is not sent.
pub(crate) async fn kubernetes_job(
    client: &reqwest::Client,
    settings: &KubernetesSettings,
    decl: &KubernetesJobDecl,
    template: &JobTemplate,
    action: &PendingAction,
) -> anyhow::Result<()> {
    let manifest = template.render(action)?;
    if settings.dry_run {
        let manifest = serde_json::to_string_pretty(&manifest)?;
        info!(request_id = %action.request_id, namespace = %decl.namespace, "kubernetes job (dry run):\n{manifest}");
        return Ok(());
    }
    let url = format!(
        "{}/apis/batch/v1/namespaces/{}/jobs",
        settings.api_url.trim_end_matches('/'),
        decl.namespace
    );
    let mut request = client
        .post(&url)
        .header("Content-Type", "application/json")
        .body(serde_json::to_vec(&manifest)?);
    if let Some(file) = &settings.token_file {
        let token = std::fs::read_to_string(file)
            .with_context(|| format!("read the service account token {}", file.display()))?;
        request = request.bearer_auth(token.trim());
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = response.status();
    if status.is_success() || status == reqwest::StatusCode::CONFLICT {
        info!(request_id = %action.request_id, %status, "kubernetes job created");
        Ok(())
    } else {
        let body = response.text().await.unwrap_or_default();
        bail!("kubernetes API {url}: {status}: {body}")
    }
}

/// The HTTP client for the Kubernetes API: the cluster's CA when given.
pub(crate) fn kubernetes_client(settings: &KubernetesSettings) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(30));
    if let Some(ca) = &settings.ca_file {
        let pem = std::fs::read(ca).with_context(|| format!("read {}", ca.display()))?;
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
    }
    Ok(builder.build()?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn only_allowed_variables_reach_webhook_headers() {
        let decl = WebhookDecl {
            url: "http://127.0.0.1:1/".into(),
            headers: [("Authorization".to_string(), "{env:PATH}".to_string())].into(),
            max_attempts: 1,
        };
        let allowed = vec!["PATH".to_string()];
        assert!(check_webhook_env(&decl, &allowed).is_ok());
        let e = check_webhook_env(&decl, &[]).unwrap_err().to_string();
        assert!(e.contains("{env:PATH}") && e.contains("webhook_env"), "{e}");
        assert_eq!(
            resolve("{env:PATH}", &allowed).unwrap(),
            std::env::var("PATH").unwrap()
        );
        assert!(resolve("{env:PATH}", &[]).is_err());
        assert_eq!(resolve("Bearer x", &[]).unwrap(), "Bearer x");
    }

    /// A webhook answering 307 to another host: not followed, not retried, an error naming why.
    #[tokio::test]
    async fn redirects_are_not_followed() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let served = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                served.fetch_add(1, Ordering::SeqCst);
                let mut buf = vec![0; 4096];
                let _ = socket.read(&mut buf).await;
                let _ = socket
                    .write_all(b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://other.test/steal\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
            }
        });
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let decl = WebhookDecl {
            url: format!("http://{addr}/hook"),
            headers: Default::default(),
            max_attempts: 3,
        };
        let action = PendingAction {
            request_id: "r-1".into(),
            kind: ActionKind::Webhook,
            request: serde_json::json!({"model": "m"}),
        };
        let e = webhook(&client, &decl, &[], &action, &CancellationToken::new())
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("redirects are not followed"), "{e}");
        assert_eq!(hits.load(Ordering::SeqCst), 1, "asked once, not retried");
    }

    /// A manifest whose Job name is invalid after filling in is not sent; a valid one is POSTed
    /// as JSON.
    #[tokio::test]
    async fn invalid_jobs_are_not_sent() {
        use std::sync::{Arc, Mutex};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::<String>::new()));
        let seen = requests.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buf = vec![0; 65536];
                let mut len = 0;
                // Headers, then the body its Content-Length announces.
                loop {
                    let n = socket.read(&mut buf[len..]).await.unwrap_or(0);
                    len += n;
                    let text = String::from_utf8_lossy(&buf[..len]).to_string();
                    let done = text.split_once("\r\n\r\n").is_some_and(|(head, body)| {
                        head.lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .is_some_and(|want| body.len() >= want)
                    });
                    if n == 0 || done {
                        break;
                    }
                }
                seen.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..len]).to_string());
                let _ = socket
                    .write_all(
                        b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    )
                    .await;
            }
        });
        let settings = KubernetesSettings {
            api_url: format!("http://{addr}"),
            token_file: None,
            ca_file: None,
            dry_run: false,
        };
        let decl = KubernetesJobDecl {
            template: "jobs/t.json".into(),
            namespace: "ml".into(),
        };
        let template = JobTemplate::parse(
            "jobs/t.json".into(),
            r#"{"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "train-{{model}}"},
                "spec": {"template": {"spec": {"containers": [{"name": "t", "image": "i", "args": ["{{policy}}"]}]}}}}"#,
        )
        .unwrap();
        let action = |model: &str| PendingAction {
            request_id: "r-1".into(),
            kind: ActionKind::KubernetesJob,
            request: serde_json::json!({"model": model, "policy": "drift", "data": {"archive_prefix": "p", "from_time": 1, "to_time": 2}}),
        };
        let client = reqwest::Client::new();
        let e = kubernetes_job(
            &client,
            &settings,
            &decl,
            &template,
            &action("Churn\"\n  hostPath: /"),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(e.contains("metadata.name"), "{e}");
        assert!(requests.lock().unwrap().is_empty(), "nothing sent");
        kubernetes_job(&client, &settings, &decl, &template, &action("churn"))
            .await
            .unwrap();
        let sent = requests.lock().unwrap().clone();
        assert_eq!(sent.len(), 1);
        let (head, body) = sent[0].split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("POST /apis/batch/v1/namespaces/ml/jobs "),
            "{head}"
        );
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{head}"
        );
        let manifest: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(manifest["metadata"]["name"], "train-churn");
    }
}
