//! A real browser for the status page's tests: Debian's Chromium, headless, driven over WebDriver by its
//! chromedriver (thirtyfour). No sandbox (the tests run as root), no background networking (the machine has
//! no internet: Chromium would flood it with refused connections), every host name resolved to nothing
//! (the page is asked for by IP address, so only an outside request would need a name), and the browser
//! log kept so a test can read console errors. One browser at a time in this test binary, so a timing
//! measurement is not skewed by another Chromium starting. Screenshots go to `target/status-page/`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use thirtyfour::common::capabilities::chromium::ChromiumLikeCapabilities;
use thirtyfour::common::log::LoggingPrefsLogLevel;
use thirtyfour::{By, DesiredCapabilities, WebDriver, WebElement};
use tokio::sync::{Semaphore, SemaphorePermit};

use super::wait_for;

/// One browser at a time.
static ONE_AT_A_TIME: Semaphore = Semaphore::const_new(1);

/// A headless Chromium with its chromedriver; both are killed when dropped.
pub struct Browser {
    driver: Option<WebDriver>,
    chromedriver: Child,
    _profile: tempfile::TempDir,
    _turn: SemaphorePermit<'static>,
    /// The page's address, `http://127.0.0.1:<port>`.
    pub base: String,
}

/// A Debian program the test setup installs (`scripts/test`), or a panic saying so.
fn program(name: &str, package: &str) -> PathBuf {
    which::which(name).unwrap_or_else(|_| {
        panic!("{name} is not installed: `scripts/test` installs Debian's {package} (apt-get install {package})")
    })
}

/// Where the screenshots go: `target/status-page/`, beside the test binary's `target/debug/deps/`.
pub fn screenshot_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let target = exe
        .ancestors()
        .nth(3)
        .expect("the test binary lives in target/<profile>/deps");
    target.join("status-page")
}

impl Browser {
    /// Starts Chromium with a window of `width` x `height` for pages under `base`.
    pub async fn start(base: &str, width: u32, height: u32) -> Self {
        let turn = ONE_AT_A_TIME
            .acquire()
            .await
            .expect("the semaphore stays open");
        let chromium = program("chromium", "chromium");
        let chromedriver = program("chromedriver", "chromium-driver");
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            listener.local_addr().unwrap().port()
        };
        let mut command = Command::new(chromedriver);
        command
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Its own process group, so dropping the browser ends Chromium's processes too.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command.spawn().expect("start chromedriver");
        let profile = tempfile::Builder::new()
            .prefix("userpipe-chromium-")
            .tempdir()
            .expect("a profile folder");
        let server = format!("http://127.0.0.1:{port}");
        let status = format!("{server}/status");
        wait_for("chromedriver to answer", Duration::from_secs(30), || {
            let status = status.clone();
            async move {
                let ready = reqwest::get(&status)
                    .await
                    .ok()?
                    .json::<Value>()
                    .await
                    .ok()?;
                ready["value"]["ready"].as_bool().filter(|r| *r)
            }
        })
        .await;

        let mut caps = DesiredCapabilities::chrome();
        caps.set_binary(chromium.to_str().expect("a utf-8 path"))
            .unwrap();
        for arg in [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
            "--force-device-scale-factor=1",
            "--lang=en-GB",
        ] {
            caps.add_arg(arg).unwrap();
        }
        caps.add_arg(&format!("--window-size={width},{height}"))
            .unwrap();
        caps.add_arg(&format!("--user-data-dir={}", profile.path().display()))
            .unwrap();
        caps.set_browser_log_level(LoggingPrefsLogLevel::All)
            .unwrap();
        let mut browser = Self {
            driver: None,
            chromedriver: child,
            _profile: profile,
            _turn: turn,
            base: base.trim_end_matches('/').to_owned(),
        };
        let driver = WebDriver::new(server, caps)
            .await
            .expect("start a chromium session");
        browser.driver = Some(driver);
        browser.resize(width, height).await;
        browser
    }

    pub fn driver(&self) -> &WebDriver {
        self.driver.as_ref().expect("the session is open")
    }

    /// Loads `path` of the page's server.
    pub async fn open(&self, path: &str) {
        let url = format!("{}{path}", self.base);
        self.driver()
            .goto(url.as_str())
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// Runs `script` (a function body that may `return`) and gives its value.
    pub async fn js(&self, script: &str) -> Value {
        self.driver()
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("run {script}: {e}"))
            .json()
            .clone()
    }

    /// Polls `script` until it returns something truthy other than `false`, or panics naming `what`.
    pub async fn wait_for_js(&self, what: &str, timeout: Duration, script: &str) -> Value {
        wait_for(what, timeout, || async {
            let value = self.js(script).await;
            let truthy = !matches!(value, Value::Null | Value::Bool(false))
                && value.as_str() != Some("")
                && value.as_u64() != Some(0);
            truthy.then_some(value)
        })
        .await
    }

    /// The refreshes the page has finished so far.
    pub async fn refreshes(&self) -> u64 {
        self.js("return Number(document.documentElement.dataset.refreshes || 0);")
            .await
            .as_u64()
            .unwrap_or(0)
    }

    pub async fn find(&self, css: &str) -> WebElement {
        self.driver()
            .find(By::Css(css))
            .await
            .unwrap_or_else(|e| panic!("find {css}: {e}"))
    }

    /// The browser log's errors since the last call (console errors, failed requests, uncaught
    /// exceptions, refused content), each as its message.
    pub async fn console_errors(&self) -> Vec<String> {
        self.driver()
            .browser_log()
            .await
            .expect("read the browser log")
            .into_iter()
            .filter(|entry| entry.level == "SEVERE")
            .map(|entry| entry.message)
            .collect()
    }

    /// Every URL the page loaded: the document itself and each resource (scripts, styles, images, fetches).
    pub async fn loaded_urls(&self) -> Vec<String> {
        let value = self
            .js("return performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource')).map(e => e.name);")
            .await;
        serde_json::from_value(value).expect("a list of URLs")
    }

    /// Resizes the window so the page's viewport is `width` x `height`.
    pub async fn resize(&self, width: u32, height: u32) {
        let driver = self.driver();
        driver
            .set_window_rect(0, 0, width, height)
            .await
            .expect("resize the window");
        // The window's frame (none when headless, some otherwise) is added back so the viewport is exact.
        let inner = self
            .js("return [window.innerWidth, window.innerHeight];")
            .await;
        let (w, h) = (
            inner[0].as_u64().unwrap_or(0),
            inner[1].as_u64().unwrap_or(0),
        );
        if (w, h) != (u64::from(width), u64::from(height)) {
            let rect = driver.get_window_rect().await.expect("the window's size");
            driver
                .set_window_rect(
                    0,
                    0,
                    (rect.width + i64::from(width) - w as i64) as u32,
                    (rect.height + i64::from(height) - h as i64) as u32,
                )
                .await
                .expect("resize the window");
        }
    }

    /// Saves a screenshot of the viewport as `target/status-page/<name>.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self
            .driver()
            .screenshot_as_png()
            .await
            .expect("take a screenshot");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).expect("make target/status-page");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write the screenshot");
        eprintln!("screenshot: {}", path.display());
        path
    }

    /// Ends the session, then chromedriver and every process of its group.
    pub async fn quit(mut self) {
        if let Some(driver) = self.driver.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), driver.quit()).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(driver) = self.driver.take() {
            // Not quit by the test (it failed): the session dies with chromedriver below, so the
            // driver's own teardown (a blocking request to chromedriver) is skipped.
            std::mem::forget(driver);
        }
        let group = self.chromedriver.id() as i32;
        // SAFETY: kill(2) on the process group this browser started; no memory is touched.
        unsafe {
            libc::kill(-group, libc::SIGKILL);
        }
        let _ = self.chromedriver.wait();
    }
}
