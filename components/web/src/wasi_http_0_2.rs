//! The WASI 0.2 HTTP handler (`wasi:http/incoming-handler@0.2.0`, through
//! spin-sdk 5.2): the same routes as the WASI 0.3 one, for hosts that do
//! not run this WASI 0.3 release candidate. A request body is read only for
//! the routes that take one, and no further than one byte past their limit
//! (`routes::body_limit`), so the limit answers 413 here as well.

use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use tasks_site::routes;
use tasks_spin_kv::wasi_http_0_2::{request, send};

/// The export: spin-sdk's macro expands to `unsafe` glue.
#[allow(unsafe_code)]
mod export {
    use spin_sdk::http::{IncomingRequest, ResponseOutparam};

    #[spin_sdk::http_component]
    async fn handle(req: IncomingRequest, out: ResponseOutparam) {
        super::handle(req, out).await;
    }
}

async fn handle(req: IncomingRequest, out: ResponseOutparam) {
    let response = match request(req, routes::body_limit).await {
        Ok(request) => super::serve(request).await,
        Err(_) => super::plain(400, "the request line or a header is not valid HTTP\n"),
    };
    send(response, out).await;
}
