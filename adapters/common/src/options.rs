//! What both drivers are configured with, and what they hand back.

use crate::io::Wire;
use gapless::Config;
use std::time::Duration;

/// Which of the Catbird server's APIs a driver speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Api {
    /// `blue.catbird.mls.*`, the SSE-era API: one `streamConvoEvents` server-sent-events
    /// stream per live conversation, and `blue.catbird.mls.getMessages` (with `sinceSeq`,
    /// or `sinceMessage` for older servers: [`Wire::paging`]). The default.
    #[default]
    Mls,
    /// `blue.catbird.mlsChat.*`, the newest API (server 5278d0c on; its `mls.*` REST routes
    /// answer 404): **one** WebSocket for every live conversation (a global ticket from
    /// `getSubscriptionTicket`, DAG-CBOR frames, `subscribeEvents`) and
    /// `blue.catbird.mlsChat.getMessages` (always `sinceSeq`, `type=app`). The machine runs
    /// with [`Config::shared_stream`].
    MlsChat,
}

impl Api {
    /// Whether live conversations share one connection ([`Config::shared_stream`]).
    pub fn shares_stream(self) -> bool {
        self == Api::MlsChat
    }

    /// The NSID of its `getMessages`, as the token provider is asked for it.
    pub fn get_messages_nsid(self) -> &'static str {
        match self {
            Api::Mls => gapless_catbird::GET_MESSAGES,
            Api::MlsChat => gapless_catbird::MLSCHAT_GET_MESSAGES,
        }
    }

    /// `mls` or `mlschat`, as the CLI spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Api::Mls => "mls",
            Api::MlsChat => "mlschat",
        }
    }

    /// The machine's configuration for this API: `config` with
    /// [`shared_stream`](Config::shared_stream) set as the API needs it (on for
    /// [`Api::MlsChat`], off for [`Api::Mls`], whatever `config` said).
    pub fn config(self, config: Config) -> Config {
        Config {
            shared_stream: self.shares_stream(),
            ..config
        }
    }
}

impl std::fmt::Display for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Api {
    type Err = String;
    fn from_str(s: &str) -> Result<Api, String> {
        match s {
            "mls" => Ok(Api::Mls),
            "mlschat" | "mlsChat" => Ok(Api::MlsChat),
            other => Err(format!(
                "unknown API {other:?}: expected mlschat (blue.catbird.mlsChat: one WebSocket) or mls (blue.catbird.mls: SSE)"
            )),
        }
    }
}

/// How a driver runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// The server, e.g. `https://mls.catbird.blue` (no trailing slash needed).
    pub base_url: String,
    /// Which API to speak ([`Api::Mls`] by default). It decides
    /// [`Config::shared_stream`], whatever [`config`](Options::config) says.
    pub api: Api,
    /// [`Api::MlsChat`]: open the WebSocket at the `endpoint` the ticket names instead of
    /// at [`base_url`](Options::base_url) (`false` by default). The real server's tickets
    /// name its production host (`wss://mls.catbird.blue/…`) unless the deployment set
    /// `WEBSOCKET_ENDPOINT`, even when the ticket came from another server (a self-hosted
    /// or local one); so by default the socket goes to the server that was configured, at
    /// `/xrpc/blue.catbird.mlsChat.subscribeEvents`. Set this for a deployment whose
    /// sockets are served elsewhere than its REST API.
    pub follow_ticket_endpoint: bool,
    /// The machine's configuration (`max_inflight_fetches` also sizes the blocking
    /// driver's fetch pool). `shared_stream` is set by [`api`](Options::api).
    pub config: Config,
    /// Paging style and decode limits.
    pub wire: Wire,
    /// Longest a fetch may take, answer included (then it failed, transiently); also the
    /// longest a stream may take to answer (for [`Api::MlsChat`]: the ticket request, and
    /// the WebSocket's connect and upgrade).
    pub request_timeout: Duration,
    /// Longest a connection may take to open.
    pub connect_timeout: Duration,
    /// Updates held for the application before the driver waits for it to read.
    pub updates_capacity: usize,
    /// `User-Agent`.
    pub user_agent: String,
}

impl Options {
    /// Defaults for a server.
    pub fn new(base_url: impl Into<String>) -> Options {
        Options {
            base_url: base_url.into().trim_end_matches('/').to_string(),
            api: Api::default(),
            follow_ticket_endpoint: false,
            config: Config::default(),
            wire: Wire::default(),
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            updates_capacity: 1024,
            user_agent: concat!("gapless/", env!("CARGO_PKG_VERSION")).into(),
        }
    }

    /// The same options speaking `api`.
    pub fn with_api(mut self, api: Api) -> Options {
        self.api = api;
        self
    }

    /// The machine's configuration: [`config`](Options::config) as [`api`](Options::api)
    /// needs it (see [`Api::config`]).
    pub fn machine_config(&self) -> Config {
        self.api.config(self.config.clone())
    }

    /// A session for these options over `store`: the machine configured for the API, and
    /// fetches made with the API's `getMessages`.
    pub fn session<S: crate::Store>(
        &self,
        store: S,
    ) -> Result<crate::Session<S>, crate::SessionError> {
        crate::Session::for_api(self.api, self.config.clone(), store, self.wire.clone())
    }

    /// The URL of a path and query.
    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{}", self.base_url, path_and_query)
    }
}

/// What a stopped driver hands back.
#[derive(Debug)]
pub struct Finished<S> {
    /// The store, with everything delivered in it.
    pub store: S,
    /// Fetches made.
    pub fetches: u64,
    /// Messages stored.
    pub committed: u64,
}

impl<S: crate::Store> Finished<S> {
    /// What a session ends with.
    pub fn of(session: crate::Session<S>) -> Finished<S> {
        Finished {
            fetches: session.fetches(),
            committed: session.committed(),
            store: session.into_store(),
        }
    }
}
