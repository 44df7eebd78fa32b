//! The one way out to other servers: server discovery and the HTTPS client (TLS checks, the
//! IP block/allow lists, deadlines), shared by everything that calls another server — key
//! fetches (unsigned), deliveries such as rejections (signed as us with X-Matrix,
//! <https://spec.matrix.org/v1.16/server-server-api/#request-authentication>) and push
//! notifications (to a gateway's URL, with `[push]`'s IP policy).

use std::time::Instant;

use invited_matrix::x_matrix::{XMatrix, header_value, request_signing_bytes};
use invited_matrix::{ServerName, SigningKey, Value, base64};

use crate::config::{FederationConfig, PushConfig};
use crate::fatal::Error;
use crate::federation::client::{FederationClient, FetchError};
use crate::federation::discovery::Discovery;

/// Discovery and the clients, with our name and key for signing requests.
#[derive(Debug)]
pub struct Outbound {
    pub client: FederationClient,
    /// For push gateways: the same client code with `[push]`'s IP lists.
    pub push_client: FederationClient,
    pub discovery: Discovery,
    our_name: ServerName,
    key: SigningKey,
}

/// An answer from another server: its status, and its body when that was JSON.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Option<Value>,
}

impl Answer {
    /// The `errcode` and `error` of an error body, for messages.
    pub fn describe(&self) -> String {
        let field = |f: &str| {
            self.body
                .as_ref()
                .and_then(|b| b.get(f))
                .and_then(Value::as_str)
                .map(|s| crate::text::printable(s).into_owned())
        };
        match (field("errcode"), field("error")) {
            (Some(code), Some(error)) => format!("{} {code}: {error}", self.status),
            (Some(code), None) => format!("{} {code}", self.status),
            _ => format!("{}", self.status),
        }
    }
}

impl Outbound {
    pub fn new(
        config: &FederationConfig,
        push: &PushConfig,
        our_name: ServerName,
        key: SigningKey,
    ) -> Result<Outbound, Error> {
        let client = FederationClient::new(config)?;
        Ok(Outbound {
            push_client: client.for_push(push),
            client,
            discovery: Discovery::default(),
            our_name,
            key,
        })
    }

    /// Sends a federation request to `server`, signed as us; `path` is the exact request
    /// target (percent-encoded), which is also what the signature covers.
    pub fn signed(
        &self,
        server: &ServerName,
        method: &str,
        path: &str,
        body: Option<&Value>,
        deadline: Instant,
    ) -> Result<Answer, FetchError> {
        if server == &self.our_name {
            return Err(FetchError(format!("{server} is our own name")));
        }
        let signed = request_signing_bytes(method, path, &self.our_name, server, body);
        let credential = XMatrix {
            origin: self.our_name.clone(),
            destination: Some(server.clone()),
            key: self.key.key_id().clone(),
            sig: base64::encode(&self.key.sign_bytes(&signed)),
        };
        let target = self.discovery.resolve(&self.client, server, deadline)?;
        let (status, body) = self.client.request(
            &target,
            method,
            path,
            &header_value(&credential),
            body,
            deadline,
        )?;
        Ok(Answer { status, body })
    }

    /// POSTs a JSON body to a push gateway's URL (no authentication: the push gateway API
    /// defines none, <https://spec.matrix.org/v1.16/push-gateway-api/>).
    pub fn push(&self, url: &str, body: &Value, deadline: Instant) -> Result<Answer, FetchError> {
        let (status, body) = self.push_client.post_to_url(url, body, deadline)?;
        Ok(Answer { status, body })
    }
}
