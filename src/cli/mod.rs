//! `coord` client subcommands: a command-line client of a running coord,
//! as etcdctl or redis-cli are for theirs. Every command builds a JSON
//! value; `--output json` prints it as is, the default prints it as a
//! table (a list of objects) or as `key: value` lines (one object).

pub mod board;
pub mod elect;
pub mod limit;
pub mod lock;
pub mod pubsub;
pub mod sem;

use std::{process::ExitCode, time::Duration};

use clap::{Args, ValueEnum};
use serde_json::Value;
use tonic::{Request, Status, metadata::MetadataValue, transport::Channel};

use crate::context::NAMESPACE_HEADER;

/// How to reach coord and how to print.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// coord's gRPC endpoint
    #[arg(long, global = true, env = "COORD_ENDPOINT", default_value = "http://127.0.0.1:50051")]
    pub endpoint: String,
    /// Tenant namespace (the coord-namespace header) [default: `default`,
    /// or with auth enabled the caller's own]
    #[arg(long, global = true, env = "COORD_NAMESPACE")]
    pub namespace: Option<String>,
    /// Output format
    #[arg(long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Deadline of each call
    #[arg(long, global = true, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// API key or JWT, sent as `authorization: Bearer <token>`
    #[arg(long, global = true, env = "COORD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM CA that signs coord's certificate (turns on TLS; `https://`
    /// endpoints without it trust the public web roots)
    #[arg(long, global = true, env = "COORD_TLS_CA")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// PEM client certificate, for mTLS
    #[arg(long, global = true, env = "COORD_TLS_CERT")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM client key, for mTLS
    #[arg(long, global = true, env = "COORD_TLS_KEY")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Name to verify coord's certificate against [default: the endpoint's host]
    #[arg(long, global = true, env = "COORD_TLS_SERVER_NAME")]
    pub tls_server_name: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// Why a client command failed; printed to stderr.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{}: {}", code_name(.0.code()), .0.message())]
    Status(#[from] Status),
    #[error("cannot reach coord: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

fn code_name(code: tonic::Code) -> String {
    format!("{code:?}").chars().fold(String::new(), |mut s, c| {
        if c.is_uppercase() && !s.is_empty() {
            s.push('_');
        }
        s.push(c.to_ascii_uppercase());
        s
    })
}

impl ClientArgs {
    pub async fn channel(&self) -> Result<Channel, CliError> {
        let mut endpoint = Channel::from_shared(self.endpoint.clone())
            .map_err(|e| CliError::Usage(format!("--endpoint: {e}")))?
            .connect_timeout(Duration::from_secs(5));
        let https = self.endpoint.starts_with("https://");
        if https || self.tls_ca.is_some() || self.tls_cert.is_some() {
            endpoint = endpoint.tls_config(self.tls()?).map_err(|e| CliError::Usage(format!("TLS: {e}")))?;
        }
        Ok(endpoint.connect().await?)
    }

    fn tls(&self) -> Result<tonic::transport::ClientTlsConfig, CliError> {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        let read = |flag: &str, path: &std::path::Path| {
            std::fs::read(path).map_err(|e| CliError::Usage(format!("{flag}: {}: {e}", path.display())))
        };
        let mut tls = ClientTlsConfig::new();
        tls = match &self.tls_ca {
            Some(ca) => tls.ca_certificate(Certificate::from_pem(read("--tls-ca", ca)?)),
            None => tls.with_webpki_roots(),
        };
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                tls = tls.identity(Identity::from_pem(read("--tls-cert", cert)?, read("--tls-key", key)?));
            }
            (None, None) => {}
            _ => return Err(CliError::Usage("--tls-cert and --tls-key go together".into())),
        }
        if let Some(name) = &self.tls_server_name {
            tls = tls.domain_name(name.clone());
        }
        Ok(tls)
    }

    /// The namespace and credentials every call carries.
    pub fn metadata(&self) -> tonic::metadata::MetadataMap {
        let mut metadata = tonic::metadata::MetadataMap::new();
        if let Some(ns) = &self.namespace
            && let Ok(ns) = MetadataValue::try_from(ns.as_str())
        {
            metadata.insert(NAMESPACE_HEADER, ns);
        }
        if let Some(token) = &self.token
            && let Ok(mut value) = MetadataValue::try_from(format!("Bearer {token}"))
        {
            value.set_sensitive(true);
            metadata.insert("authorization", value);
        }
        metadata
    }

    /// A request carrying the namespace, the credentials and the deadline.
    pub fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        *request.metadata_mut() = self.metadata();
        request.set_timeout(self.timeout);
        request
    }

    /// Prints a command's result.
    pub fn print(&self, value: &Value) {
        match self.output {
            Output::Json => println!("{value}"),
            Output::Table => print!("{}", table(value)),
        }
    }
}

/// Renders a value for people: a list of objects as aligned columns, an
/// object as `key: value` lines (nested lists as tables below).
pub fn table(value: &Value) -> String {
    let cell = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    match value {
        Value::Array(rows) if rows.iter().all(Value::is_object) && !rows.is_empty() => {
            let mut columns: Vec<String> = Vec::new();
            for row in rows.iter().filter_map(Value::as_object) {
                for key in row.keys() {
                    if !columns.contains(key) {
                        columns.push(key.clone());
                    }
                }
            }
            let cells: Vec<Vec<String>> = rows
                .iter()
                .filter_map(Value::as_object)
                .map(|row| columns.iter().map(|c| row.get(c).map(cell).unwrap_or_default()).collect())
                .collect();
            let widths: Vec<usize> = columns
                .iter()
                .enumerate()
                .map(|(i, c)| cells.iter().map(|r| r[i].chars().count()).max().unwrap_or(0).max(c.len()))
                .collect();
            let line = |items: Vec<String>| {
                let padded: Vec<String> = items.iter().zip(&widths).map(|(s, w)| format!("{s:<w$}")).collect();
                format!("{}\n", padded.join("  ").trim_end())
            };
            let mut out = line(columns.iter().map(|c| c.to_uppercase()).collect());
            for row in cells {
                out.push_str(&line(row));
            }
            out
        }
        Value::Array(rows) if rows.is_empty() => "(none)\n".to_owned(),
        Value::Object(map) => {
            let mut out = String::new();
            let mut nested = String::new();
            for (k, v) in map {
                match v {
                    Value::Array(_) => nested.push_str(&format!("\n{k}:\n{}", table(v))),
                    Value::Object(_) => nested.push_str(&format!("\n{k}:\n{}", table(v))),
                    _ => out.push_str(&format!("{k}: {}\n", cell(v))),
                }
            }
            out + &nested
        }
        other => format!("{}\n", cell(other)),
    }
}

/// Exit codes of the client commands (the README lists them): 0 done; 1 a
/// normal "no" (denied, not acquired, not SERVING); 2 bad usage or input
/// (also when coord answers INVALID_ARGUMENT or OUT_OF_RANGE); 3 any other
/// error (coord or Redis unreachable, not found, deadline, …).
pub const EXIT_NO: u8 = 1;
pub const EXIT_BAD_INPUT: u8 = 2;
pub const EXIT_ERROR: u8 = 3;

/// Prints an error the same way for every command.
pub fn fail(e: &CliError) -> ExitCode {
    eprintln!("coord: {e}");
    ExitCode::from(match e {
        CliError::Usage(_) => EXIT_BAD_INPUT,
        CliError::Status(s) if matches!(s.code(), tonic::Code::InvalidArgument | tonic::Code::OutOfRange) => {
            EXIT_BAD_INPUT
        }
        _ => EXIT_ERROR,
    })
}

/// `coord health`: exit 0 only when SERVING.
pub async fn health(args: &ClientArgs, service: &str) -> Result<ExitCode, CliError> {
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
    let mut client = HealthClient::new(args.channel().await?);
    let reply = client.check(args.request(HealthCheckRequest { service: service.to_owned() })).await?.into_inner();
    let status = ServingStatus::try_from(reply.status).unwrap_or(ServingStatus::Unknown);
    args.print(&serde_json::json!({ "service": service, "status": status.as_str_name() }));
    Ok(if status == ServingStatus::Serving { ExitCode::SUCCESS } else { ExitCode::from(EXIT_NO) })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn tables_align_columns_and_objects_print_as_lines() {
        let rows = json!([{"rank": 1, "member": "ada"}, {"rank": 10, "member": "bo", "score": 5}]);
        assert_eq!(table(&rows), "RANK  MEMBER  SCORE\n1     ada\n10    bo      5\n");
        assert_eq!(table(&json!({"status": "SERVING", "ttl_ms": 5})), "status: SERVING\nttl_ms: 5\n");
        assert_eq!(code_name(tonic::Code::InvalidArgument), "INVALID_ARGUMENT");
    }
}
