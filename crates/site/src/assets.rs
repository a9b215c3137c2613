//! Static assets compiled into the component: CSP `default-src 'self'` forbids
//! inline styles and scripts, so the stylesheet and the live pages' script are
//! served from our own origin; the OpenAPI document is served as kept in the repo.

use crate::Response;
use crate::http::{cache, content_type};
use crate::paths::{FAVICON, LIVE_SCRIPT, OPENAPI, STYLESHEET};

/// One static file.
pub(crate) struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

static ASSETS: [Asset; 4] = [
    Asset {
        path: STYLESHEET,
        content_type: content_type::CSS,
        body: include_str!("../assets/app.css"),
    },
    Asset {
        path: FAVICON,
        content_type: content_type::SVG,
        body: include_str!("../assets/favicon.svg"),
    },
    Asset {
        path: LIVE_SCRIPT,
        content_type: content_type::JS,
        body: include_str!("../assets/live.js"),
    },
    Asset {
        path: OPENAPI,
        content_type: content_type::JSON,
        body: include_str!("../openapi.json"),
    },
];

pub(crate) fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

pub(crate) fn serve(asset: &Asset) -> Response {
    Response::new(
        200,
        asset.content_type,
        cache::ASSET,
        asset.body.as_bytes().to_vec(),
    )
}
