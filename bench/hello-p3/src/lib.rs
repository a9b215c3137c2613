//! The WASI 0.3 yardstick of bench/http.sh: a Spin HTTP component on
//! spin-sdk 6 that does nothing but answer `200 hello`. Spin 4 reuses WASI 0.3
//! instances across requests, which WASI 0.2 components never get.

/// The exported HTTP handler: the SDK's macro expands to `unsafe` glue.
#[allow(unsafe_code)]
mod entry {
    use spin_sdk::http::{IntoResponse, Request};

    #[spin_sdk::http_service]
    async fn hello(_req: Request) -> impl IntoResponse {
        "hello"
    }
}
