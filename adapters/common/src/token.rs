//! Tokens, one per request.

use std::fmt;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A bearer token. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Wraps a token.
    pub fn new(token: impl Into<String>) -> Token {
        Token(token.into())
    }

    /// The token itself, for the `Authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `Bearer <token>`.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// No token could be had. The request is not sent; it counts as a transient failure (the
/// machine backs off and retries).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The token command could not run.
    #[error("token command {program:?} could not run: {source}")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The token command failed or printed nothing.
    #[error("token command {program:?} failed ({status}): {stderr}")]
    Failed {
        /// The program.
        program: PathBuf,
        /// Its exit status.
        status: String,
        /// The start of what it wrote to stderr.
        stderr: String,
    },
    /// The token command did not finish in time.
    #[error("token command {program:?} did not finish within {timeout:?}")]
    Timeout {
        /// The program.
        program: PathBuf,
        /// The limit.
        timeout: Duration,
    },
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// Gives a token for each request, asked with the method's NSID
/// (`blue.catbird.mls.getMessages`, `blue.catbird.mls.streamConvoEvents`; with
/// [`Api::MlsChat`](crate::Api::MlsChat) `blue.catbird.mlsChat.getMessages` and
/// `blue.catbird.mlsChat.getSubscriptionTicket`, the WebSocket taking the ticket). Called
/// once per request, from an IO task or thread, never from the machine's loop.
pub trait TokenProvider: Send + Sync + 'static {
    /// A token for one call of `nsid`.
    fn token(&self, nsid: &str) -> Result<Token, TokenError>;
}

impl<F> TokenProvider for F
where
    F: Fn(&str) -> Result<Token, TokenError> + Send + Sync + 'static,
{
    fn token(&self, nsid: &str) -> Result<Token, TokenError> {
        self(nsid)
    }
}

impl<T: TokenProvider + ?Sized> TokenProvider for Arc<T> {
    fn token(&self, nsid: &str) -> Result<Token, TokenError> {
        (**self).token(nsid)
    }
}

/// `Bearer <token>` for one call of `nsid`, or `None` (logged) when the provider failed:
/// the request is then not sent and counts as a transient failure.
pub fn bearer(tokens: &dyn TokenProvider, nsid: &str) -> Option<String> {
    match tokens.token(nsid) {
        Ok(token) => Some(token.bearer()),
        Err(e) => {
            tracing::warn!(nsid, error = %e, "no token");
            None
        }
    }
}

/// The same token for every request (servers that accept a long-lived token).
#[derive(Clone, Debug)]
pub struct FixedToken(pub Token);

impl FixedToken {
    /// A fixed token.
    pub fn new(token: impl Into<String>) -> FixedToken {
        FixedToken(Token::new(token))
    }
}

impl TokenProvider for FixedToken {
    fn token(&self, _nsid: &str) -> Result<Token, TokenError> {
        Ok(self.0.clone())
    }
}

/// Runs a program for every request, with the method's NSID as its last argument, and uses
/// what it prints on stdout (trimmed) as the token: users mint service tokens with their own
/// tooling. Its stderr is kept for the error only; its stdout is never logged.
#[derive(Clone, Debug)]
pub struct CommandToken {
    program: PathBuf,
    args: Vec<String>,
    timeout: Duration,
}

impl CommandToken {
    /// `program args… <nsid>`, killed after 10 s.
    pub fn new(program: impl Into<PathBuf>, args: Vec<String>) -> CommandToken {
        CommandToken {
            program: program.into(),
            args,
            timeout: Duration::from_secs(10),
        }
    }

    /// Splits a command line on whitespace: `"mint-token --aud did:web:x"`.
    pub fn parse(command_line: &str) -> Option<CommandToken> {
        let mut words = command_line.split_whitespace().map(str::to_string);
        let program = words.next()?;
        Some(CommandToken::new(program, words.collect()))
    }

    /// How long the program may take.
    pub fn with_timeout(mut self, timeout: Duration) -> CommandToken {
        self.timeout = timeout;
        self
    }
}

impl TokenProvider for CommandToken {
    fn token(&self, nsid: &str) -> Result<Token, TokenError> {
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .arg(nsid)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| TokenError::Spawn {
                program: self.program.clone(),
                source,
            })?;
        let started = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if started.elapsed() < self.timeout => {
                    std::thread::sleep(Duration::from_millis(2))
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(TokenError::Timeout {
                        program: self.program.clone(),
                        timeout: self.timeout,
                    });
                }
                Err(source) => {
                    return Err(TokenError::Spawn {
                        program: self.program.clone(),
                        source,
                    })
                }
            }
        };
        let mut stdout = String::new();
        let mut stderr = String::new();
        if let Some(mut out) = child.stdout.take() {
            let _ = out.read_to_string(&mut stdout);
        }
        if let Some(mut err) = child.stderr.take() {
            let _ = err.read_to_string(&mut stderr);
        }
        let token = stdout.trim();
        if !status.success() || token.is_empty() {
            return Err(TokenError::Failed {
                program: self.program.clone(),
                status: status.to_string(),
                stderr: stderr.chars().take(200).collect(),
            });
        }
        Ok(Token::new(token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_never_prints() {
        let t = Token::new("s3cret");
        assert!(!format!("{t:?} {t}").contains("s3cret"));
        assert_eq!(t.bearer(), "Bearer s3cret");
    }

    #[cfg(unix)]
    #[test]
    fn the_command_gets_the_nsid_last_and_its_output_is_the_token() {
        let provider = CommandToken::parse("echo tok-for").unwrap();
        let t = provider.token("blue.catbird.mls.getMessages").unwrap();
        assert_eq!(t.expose(), "tok-for blue.catbird.mls.getMessages");
    }

    #[cfg(unix)]
    #[test]
    fn a_failing_or_silent_command_is_an_error() {
        assert!(matches!(
            CommandToken::parse("false").unwrap().token("x"),
            Err(TokenError::Failed { .. })
        ));
        assert!(matches!(
            CommandToken::parse("true").unwrap().token("x"),
            Err(TokenError::Failed { .. })
        ));
        assert!(matches!(
            CommandToken::parse("/nonexistent/mint").unwrap().token("x"),
            Err(TokenError::Spawn { .. })
        ));
    }
}
