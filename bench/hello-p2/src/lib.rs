//! The WASI 0.2 yardstick of bench/http.sh: a Spin HTTP component that does
//! nothing but answer `200 hello`. Every route of the app is reported as a
//! ratio to it: what the runtime can do for a component, on this machine, now.

/// The exported HTTP handler: the SDK's macro expands to `unsafe` glue.
#[allow(unsafe_code)]
mod entry {
    use spin_sdk::http::{Request, Response};

    #[spin_sdk::http_component]
    fn hello(_req: Request) -> Response {
        Response::builder()
            .status(200)
            .header("content-type", "text/plain")
            .body("hello")
            .build()
    }
}
