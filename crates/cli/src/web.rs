//! Browser pages, embedded in the binary at build time from `web/`.

/// One embedded file: the URL path it is served at, its content type and its bytes.
pub(crate) struct Asset {
    pub(crate) path: &'static str,
    pub(crate) content_type: &'static str,
    pub(crate) body: &'static str,
}

const HTML: &str = "text/html; charset=utf-8";

/// Every page and script the node serves outside the API.
pub(crate) const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: HTML,
        body: include_str!("../../../web/index.html"),
    },
    Asset {
        path: "/chat",
        content_type: HTML,
        body: include_str!("../../../web/chat.html"),
    },
];

/// Finds the embedded file served at `path`.
pub(crate) fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|asset| asset.path == path)
}
