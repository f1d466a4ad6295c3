//! A real headless Chromium for the web console's tests: Debian's chromedriver started on a loopback port, one WebDriver session per simulated person (each with its own profile, so its own cookies), and helpers to wait for what a page shows and to save screenshots under `target/console-screenshots`.

use crate::process::ChildGuard;
use anyhow::{Context, Result, anyhow, bail};
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long a page element may take to show what a test waits for.
pub const UI_TIMEOUT: Duration = Duration::from_secs(20);
const DRIVER_START_TIMEOUT: Duration = Duration::from_secs(30);

/// Fails with what to install when the browser is missing; under CI that
/// is a failure like any other.
pub fn ensure_browser() -> Result<()> {
    for path in [CHROMIUM, CHROMEDRIVER] {
        if !Path::new(path).is_file() {
            bail!(
                "{path} is missing: the console tests need Debian's chromium and chromium-driver \
                 (deploy/install-deps.sh installs them)"
            );
        }
    }
    Ok(())
}

/// A chromedriver process on a free loopback port.
pub struct Driver {
    _child: ChildGuard,
    url: String,
    dir: PathBuf,
}

impl Driver {
    pub fn start(dir: &Path) -> Result<Driver> {
        ensure_browser()?;
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let port = crate::free_port(ip)?;
        let mut cmd = Command::new(CHROMEDRIVER);
        cmd.arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1");
        let child = ChildGuard::spawn(
            "chromedriver",
            &mut cmd,
            &crate::log_path(dir, "chromedriver"),
        )?;
        let addr = SocketAddr::new(ip, port);
        let deadline = Instant::now() + DRIVER_START_TIMEOUT;
        while TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
            if Instant::now() >= deadline {
                bail!(
                    "chromedriver does not listen on {addr}; log:\n{}",
                    child.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(Driver {
            _child: child,
            url: format!("http://{addr}"),
            dir: dir.to_path_buf(),
        })
    }

    /// A new browser (its own profile: no cookies shared with others).
    pub async fn browser(&self, label: &str) -> Result<Browser> {
        let profile = self.dir.join(format!("chromium-{label}"));
        std::fs::create_dir_all(&profile)?;
        let mut caps = serde_json::Map::new();
        caps.insert("acceptInsecureCerts".into(), json!(true));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1400,1000",
                    format!("--user-data-dir={}", profile.display()),
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&self.url)
            .await
            .with_context(|| format!("starting Chromium through chromedriver at {}", self.url))?;
        Ok(Browser { client })
    }
}

/// One person's browser.
pub struct Browser {
    pub client: Client,
}

impl Browser {
    pub async fn goto(&self, url: &str) -> Result<()> {
        self.client
            .goto(url)
            .await
            .with_context(|| format!("opening {url}"))
    }

    pub async fn find(&self, css: &str) -> Result<Element> {
        let found = self
            .client
            .wait()
            .at_most(UI_TIMEOUT)
            .for_element(Locator::Css(css))
            .await;
        match found {
            Ok(element) => Ok(element),
            Err(e) => Err(anyhow!("no element {css} on {}: {e}", self.url().await)),
        }
    }

    pub async fn url(&self) -> String {
        self.client
            .current_url()
            .await
            .map(|u| u.to_string())
            .unwrap_or_default()
    }

    pub async fn exists(&self, css: &str) -> Result<bool> {
        Ok(!self.client.find_all(Locator::Css(css)).await?.is_empty())
    }

    /// The text of the element `css` finds. Live pages replace elements
    /// (a status cell on each update): one replaced between finding and
    /// reading is found again, a few times at most.
    pub async fn text(&self, css: &str) -> Result<String> {
        let mut attempts = 0;
        loop {
            match self.find(css).await?.text().await {
                Ok(text) => return Ok(text),
                Err(fantoccini::error::CmdError::Standard(e))
                    if e.error == fantoccini::error::ErrorStatus::StaleElementReference
                        && attempts < 5 =>
                {
                    attempts += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    pub async fn click(&self, css: &str) -> Result<()> {
        self.find(css)
            .await?
            .click()
            .await
            .with_context(|| format!("clicking {css}"))
    }

    /// Clicks something that loads a new page and waits until it has.
    pub async fn click_to(&self, css: &str) -> Result<()> {
        self.mark_page().await?;
        self.click(css).await?;
        self.wait_new_page(css).await
    }

    /// Chooses an option whose change loads a new page (the wizard's system
    /// pickers) and waits until it has.
    pub async fn select_to(&self, css: &str, value: &str) -> Result<()> {
        self.mark_page().await?;
        self.select(css, value).await?;
        self.wait_new_page(css).await
    }

    async fn mark_page(&self) -> Result<()> {
        self.client
            .execute("window.__nasfleetOldPage = true;", vec![])
            .await
            .context("marking the page")?;
        Ok(())
    }

    async fn wait_new_page(&self, after: &str) -> Result<()> {
        let deadline = Instant::now() + UI_TIMEOUT;
        loop {
            let state = self
                .client
                .execute(
                    "return window.__nasfleetOldPage === true ? 'old' : document.readyState;",
                    vec![],
                )
                .await;
            if let Ok(serde_json::Value::String(state)) = state
                && state == "complete"
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("no new page after {after} within {UI_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Replaces the text of an input.
    pub async fn fill(&self, css: &str, value: &str) -> Result<()> {
        let input = self.find(css).await?;
        input.clear().await?;
        input
            .send_keys(value)
            .await
            .with_context(|| format!("typing into {css}"))
    }

    /// Chooses the option with `value` of a select (firing its change event).
    pub async fn select(&self, css: &str, value: &str) -> Result<()> {
        self.find(css)
            .await?
            .select_by_value(value)
            .await
            .with_context(|| format!("choosing {value} in {css}"))
    }

    /// Waits until the text of `css` satisfies `ok`; returns it.
    pub async fn wait_text(
        &self,
        css: &str,
        timeout: Duration,
        ok: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        loop {
            if let Ok(elements) = self.client.find_all(Locator::Css(css)).await
                && let Some(element) = elements.first()
                && let Ok(text) = element.text().await
            {
                if ok(&text) {
                    return Ok(text);
                }
                last = text;
            }
            if Instant::now() >= deadline {
                return Err(anyhow!(
                    "{css} on {} still shows {last:?} after {timeout:?}",
                    self.url().await
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Runs a script in the page and returns what it returns.
    pub async fn script(&self, code: &str) -> Result<serde_json::Value> {
        match self.client.execute_async(code, vec![]).await {
            Ok(value) => Ok(value),
            Err(e) => Err(anyhow!("running a script in {}: {e}", self.url().await)),
        }
    }

    /// Writes a screenshot of the page to `target/console-screenshots/NAME.png`.
    pub async fn screenshot(&self, name: &str) -> Result<PathBuf> {
        let png = self
            .client
            .screenshot()
            .await
            .context("taking a screenshot")?;
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    pub async fn close(self) -> Result<()> {
        self.client.close().await.context("closing the browser")
    }
}

/// `target/console-screenshots` of the workspace.
pub fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots")
}
