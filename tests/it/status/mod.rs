//! The status page: its endpoints and writing action over HTTP (`api`), and the page itself in a real
//! browser against `userpipe run` on the real stack (`page`), with screenshots under `target/status-page/`.

mod api;
mod page;
