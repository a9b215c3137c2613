//! The client over a server that answers anything: no response panics it,
//! only a 2xx is accepted, and no error quotes the API token.

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use tasks_cf_kv::{Client, Config, Http, HttpRequest, HttpResponse, TransportError};

use crate::classify::{retry_after, status};
use crate::envelope::any_body;
use tasks_proptest_kit::{check, fed};

/// Answers every request with one canned response.
struct Canned(HttpResponse);

impl Http for Canned {
    fn send(&self, _: HttpRequest) -> Result<HttpResponse, TransportError> {
        fed();
        Ok(self.0.clone())
    }
}

const TOKEN: &str = "tok-3f9a1c";

#[test]
fn the_client_answers_any_response_without_leaking_the_token() {
    let response = (status(), retry_after(), any_body(), any::<bool>());
    check(
        "client call",
        response,
        |(status, retry_after, body, echo)| {
            // A server that echoes the token puts it in the body and the error texts.
            let body = if echo {
                let text = String::from_utf8_lossy(&body).replace('"', &format!("\"{TOKEN} "));
                format!("{TOKEN} {text}").into_bytes()
            } else {
                body
            };
            let headers = retry_after
                .map(|v| vec![("Retry-After".to_owned(), v)])
                .unwrap_or_default();
            let config = Config::new("https://api.example", "ns-1", TOKEN);
            let client = Client::new(
                Canned(HttpResponse {
                    status,
                    headers,
                    body,
                }),
                config,
            )
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let outcomes = [
                client.list("task:", None, None).map(drop),
                client.list_all("task:").map(drop),
                client.delete("task:t-1"),
                client.put("task:t-1", b"{}"),
                client.get("task:t-1").map(drop),
            ];
            for outcome in outcomes {
                match outcome {
                    // Not even its start, which cutting a long body short could leave.
                    Err(e) => prop_assert!(!e.to_string().contains(&TOKEN[..6]), "{e}"),
                    Ok(()) => prop_assert!((200..300).contains(&status), "accepted HTTP {status}"),
                }
            }
            Ok(())
        },
    );
}
