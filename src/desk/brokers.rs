//! Which brokers a desk uses: one URL, or several (the nodes of a
//! cluster), tried in turn; and where they come from, so that a password
//! never stands on the command line, where `ps` shows it to every user.

use std::path::{Path, PathBuf};

use super::{DEFAULT_BROKER, redacted};
use crate::secure::keys::{KeyError, Trusted, read_trusted};

/// The environment variable that names the brokers when no `--broker` is
/// given: one URL, or several separated by spaces or commas.
pub const BROKER_VARIABLE: &str = "ZMQ_CHAT_BROKER";

/// Why the brokers named cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BrokerUrlError {
    /// A password on the command line, for `ps` to show.
    #[error(
        "--broker {url} holds a password, which ps shows to every user of this machine; put the URL in ${BROKER_VARIABLE}, or in a file of yours named by --broker-file (chmod 600)"
    )]
    PasswordOnCommandLine {
        /// The URL, its password hidden.
        url: String,
    },
    /// The broker file cannot be trusted or read.
    #[error(transparent)]
    File(#[from] KeyError),
    /// The broker file holds no URL.
    #[error("{} names no broker (expected one amqp:// URL a line)", path.display())]
    EmptyFile {
        /// The file.
        path: PathBuf,
    },
    /// A `--ca` file that cannot be used.
    #[error("cannot use the certificate authorities of {}: {problem}", path.display())]
    Ca {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// A URL that does not parse.
    #[error("'{url}' is not an AMQP URL (expected amqp://USER:PASSWORD@HOST:PORT/VHOST)")]
    NotAUrl {
        /// The URL, its password hidden.
        url: String,
    },
}

/// The brokers' URLs, in the order to try them: those of `file`
/// (`--broker-file`: one a line, `#` comments, readable by its owner only),
/// else the `flags` (`--broker`, none with a password), else those of
/// [`BROKER_VARIABLE`], else [`DEFAULT_BROKER`].
///
/// # Errors
/// A password in `flags`, a file others may read, a URL that does not parse.
pub fn broker_urls(flags: &[String], file: Option<&Path>) -> Result<Vec<String>, BrokerUrlError> {
    let urls = if let Some(path) = file {
        let text = read_trusted(path, Trusted::Credentials)?;
        let urls: Vec<String> = text
            .lines()
            .map(|line| line.split('#').next().unwrap_or_default().trim())
            .filter(|line| !line.is_empty())
            .map(str::to_string)
            .collect();
        if urls.is_empty() {
            return Err(BrokerUrlError::EmptyFile {
                path: path.to_path_buf(),
            });
        }
        urls
    } else if !flags.is_empty() {
        if let Some(url) = flags.iter().find(|url| has_password(url)) {
            return Err(BrokerUrlError::PasswordOnCommandLine { url: redacted(url) });
        }
        flags.to_vec()
    } else {
        let variable = std::env::var(BROKER_VARIABLE).unwrap_or_default();
        let urls: Vec<String> = variable
            .split([' ', ',', '\n', '\t'])
            .filter(|url| !url.is_empty())
            .map(str::to_string)
            .collect();
        if urls.is_empty() {
            vec![DEFAULT_BROKER.to_string()]
        } else {
            urls
        }
    };
    for url in &urls {
        url.parse::<lapin::uri::AMQPUri>()
            .map_err(|_| BrokerUrlError::NotAUrl { url: redacted(url) })?;
    }
    Ok(urls)
}

/// The certificate authorities of the PEM file `path` (`--ca`), as text.
///
/// # Errors
/// A file that cannot be read, or holds no certificate.
pub fn certificate_authorities(path: &Path) -> Result<String, BrokerUrlError> {
    let text = std::fs::read_to_string(path).map_err(|error| BrokerUrlError::Ca {
        path: path.to_path_buf(),
        problem: error.to_string(),
    })?;
    if !text.contains("-----BEGIN CERTIFICATE-----") {
        return Err(BrokerUrlError::Ca {
            path: path.to_path_buf(),
            problem: "no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into(),
        });
    }
    Ok(text)
}

/// Whether `url` carries a password (`amqp://USER:PASSWORD@HOST`).
fn has_password(url: &str) -> bool {
    url.split_once("://")
        .and_then(|(_, rest)| rest.split('/').next()?.rsplit_once('@'))
        .is_some_and(|(credentials, _)| credentials.contains(':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_on_the_command_line_is_refused_and_hidden() {
        let refused = broker_urls(&["amqp://ann:s3cret@host/%2f".into()], None).unwrap_err();
        let text = refused.to_string();
        assert!(text.contains("amqp://ann:***@host/%2f"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
        assert_eq!(
            broker_urls(&["amqp://ann@host".into(), "amqp://host:5673".into()], None).unwrap(),
            ["amqp://ann@host", "amqp://host:5673"]
        );
    }

    #[test]
    fn a_broker_file_gives_urls_one_a_line_and_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let scratch = crate::fixture::Scratch::new("broker-file");
        let path = scratch.join("brokers");
        std::fs::write(
            &path,
            "# the cluster\namqp://ann:s3cret@one:5672\n\namqp://ann:s3cret@two:5672 # second\n",
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            broker_urls(&[], Some(&path)).unwrap(),
            ["amqp://ann:s3cret@one:5672", "amqp://ann:s3cret@two:5672"]
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let loose = broker_urls(&[], Some(&path)).unwrap_err().to_string();
        assert!(
            loose.contains("broker file") && loose.contains("chmod 600"),
            "{loose}"
        );
    }

    #[test]
    fn what_is_not_an_amqp_url_is_said_so() {
        let error = broker_urls(&["http://host".into()], None).unwrap_err();
        assert!(matches!(error, BrokerUrlError::NotAUrl { .. }), "{error}");
    }
}
