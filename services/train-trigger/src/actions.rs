//! Actions beside the `train.requests` record: a webhook POST with retries and an idempotency
//! key, and a Kubernetes Job created from a template through the Kubernetes API (or, in dry-run
//! mode, printed).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use tributary_core::schema::triggers::{KubernetesJobDecl, WebhookDecl};

use crate::config::KubernetesSettings;

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
            request = request.header(k, resolve(v)?);
        }
        match request.send().await {
            Ok(r) if r.status().is_success() => {
                info!(request_id = %action.request_id, attempt, "webhook delivered");
                return Ok(());
            }
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

/// `{env:NAME}` is the variable's value; anything else is itself.
fn resolve(value: &str) -> anyhow::Result<String> {
    match value
        .strip_prefix("{env:")
        .and_then(|v| v.strip_suffix('}'))
    {
        Some(name) => std::env::var(name).with_context(|| format!("environment variable {name}")),
        None => Ok(value.to_string()),
    }
}

/// The Job manifest: the template with the request's values filled in.
pub(crate) fn render_job(template: &str, action: &PendingAction) -> String {
    let value = |k: &str| match &action.request[k] {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let data = &action.request["data"];
    let mut out = template.replace("{{request_id}}", &action.request_id);
    for k in ["model", "policy"] {
        out = out.replace(&format!("{{{{{k}}}}}"), &value(k));
    }
    for k in ["from_time", "to_time", "archive_prefix"] {
        let v = match &data[k] {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        out = out.replace(&format!("{{{{{k}}}}}"), &v);
    }
    out
}

/// Creates the Job through the Kubernetes API, or prints it in dry-run mode. A Job that already
/// exists (a retry after a crash) counts as created.
pub(crate) async fn kubernetes_job(
    client: &reqwest::Client,
    settings: &KubernetesSettings,
    decl: &KubernetesJobDecl,
    schemas: &std::path::Path,
    action: &PendingAction,
) -> anyhow::Result<()> {
    let path: PathBuf = schemas.join(&decl.template);
    let template = std::fs::read_to_string(&path)
        .with_context(|| format!("read the job template {}", path.display()))?;
    let manifest = render_job(&template, action);
    if settings.dry_run {
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
        .header("Content-Type", "application/yaml")
        .body(manifest);
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
    fn the_job_template_is_filled_in() {
        let action = PendingAction {
            request_id: "r-1".into(),
            kind: ActionKind::KubernetesJob,
            request: serde_json::json!({"model": "churn", "policy": "drift", "data": {"archive_prefix": "s3://lake/f/", "from_time": 1, "to_time": 2}}),
        };
        let out = render_job(
            "name: train-{{model}}-{{request_id}}\nargs: [{{archive_prefix}}, {{from_time}}, {{to_time}}, {{policy}}]",
            &action,
        );
        assert_eq!(
            out,
            "name: train-churn-r-1\nargs: [s3://lake/f/, 1, 2, drift]"
        );
    }
}
