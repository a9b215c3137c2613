//! A yardstick of bench/http.sh: the WASI 0.3 hello world plus one read of
//! Spin's key-value store per request, with spin-sdk 6's own (asynchronous)
//! key-value API. `GET /p3-kv/<key>` answers the length of the value stored
//! under `<key>` in the `tasks` store, which Spin opens once per instance.
//! No route of the app can read the store and be faster than this on the
//! same runtime and files.

/// The exported HTTP handler: the SDK's macro expands to `unsafe` glue.
#[allow(unsafe_code)]
mod entry {
    use std::rc::Rc;

    use spin_sdk::http::{IntoResponse, Request, StatusCode};
    use spin_sdk::key_value::Store;

    thread_local! {
        static STORE: std::cell::RefCell<Option<Rc<Store>>> = const { std::cell::RefCell::new(None) };
    }

    async fn store() -> Result<Rc<Store>, String> {
        if let Some(s) = STORE.with(|s| s.borrow().clone()) {
            return Ok(s);
        }
        let s = Rc::new(Store::open("tasks").await.map_err(|e| e.to_string())?);
        STORE.with(|slot| *slot.borrow_mut() = Some(s.clone()));
        Ok(s)
    }

    #[spin_sdk::http_service]
    async fn hello(req: Request) -> impl IntoResponse {
        let key = req.uri().path().trim_start_matches("/p3-kv/").to_owned();
        match store().await {
            Ok(s) => match s.get(&key).await {
                Ok(Some(v)) => (StatusCode::OK, v.len().to_string()),
                Ok(None) => (StatusCode::NOT_FOUND, format!("no key {key}")),
                Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            },
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e),
        }
    }
}
