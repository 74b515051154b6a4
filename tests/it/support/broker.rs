//! A private, throwaway Kafka broker for tests that take Kafka down: the same jars as `scripts/stack`
//! (`$USERPIPE_STACK_DIR/kafka/libs`), one KRaft node on free loopback ports, with its own data folder and
//! cluster id. Stopped and started on demand; killed when dropped. The stack's shared broker is never
//! touched. A [`ProduceGate`] in front of one holds back its produce requests while everything else passes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine;
use rdkafka::producer::{BaseProducer, Producer};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long a start may take on a loaded machine (two JVMs: the storage format, then the broker); at a load
/// of 10 to 15 on two cores it once took longer than two minutes.
const START_TIMEOUT: Duration = Duration::from_secs(300);

pub struct TestBroker {
    dir: TempDir,
    libs: PathBuf,
    pub port: u16,
    child: Option<Child>,
}

impl TestBroker {
    /// Formats a new broker's storage, starts it, and waits until it answers.
    pub async fn start() -> Self {
        Self::start_advertising(None).await
    }

    /// [`TestBroker::start`], telling clients to reach it at `advertised` (a proxy's port) instead of its own.
    async fn start_advertising(advertised: Option<u16>) -> Self {
        let stack = std::env::var("USERPIPE_STACK_DIR").unwrap_or_else(|_| {
            panic!("USERPIPE_STACK_DIR is not set: use `eval \"$(scripts/stack env)\"`")
        });
        let libs = Path::new(&stack).join("kafka/libs");
        assert!(
            libs.is_dir(),
            "no kafka jars in {}: run `scripts/stack up`",
            libs.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("userpipe-kafka-")
            .tempdir()
            .expect("make a temporary folder");
        let (port, controller) = (free_port(), free_port());
        let advertised = advertised.unwrap_or(port);
        let data = dir.path().join("data");
        std::fs::write(
            dir.path().join("server.properties"),
            format!(
                "process.roles=broker,controller\nnode.id=1\n\
                 controller.quorum.voters=1@127.0.0.1:{controller}\n\
                 listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}\n\
                 advertised.listeners=PLAINTEXT://127.0.0.1:{advertised}\n\
                 inter.broker.listener.name=PLAINTEXT\ncontroller.listener.names=CONTROLLER\n\
                 listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n\
                 log.dirs={}\nnum.partitions=3\ndefault.replication.factor=1\nmin.insync.replicas=1\n\
                 auto.create.topics.enable=false\noffsets.topic.replication.factor=1\n\
                 offsets.topic.num.partitions=3\ntransaction.state.log.replication.factor=1\n\
                 transaction.state.log.min.isr=1\nshare.coordinator.state.topic.replication.factor=1\n\
                 share.coordinator.state.topic.min.isr=1\ngroup.initial.rebalance.delay.ms=0\n",
                data.display()
            ),
        )
        .expect("write server.properties");
        std::fs::write(
            dir.path().join("log4j2.properties"),
            "status = warn\nappender.out.type = Console\nappender.out.name = OUT\n\
             appender.out.layout.type = PatternLayout\nappender.out.layout.pattern = [%d] %p %m (%c)%n\n\
             rootLogger.level = WARN\nrootLogger.appenderRef.out.ref = OUT\n",
        )
        .expect("write log4j2.properties");
        let mut broker = Self {
            dir,
            libs,
            port,
            child: None,
        };
        // As Kafka's own Uuid.randomUuid: never one that starts with '-', which the storage tool's
        // argument parser takes for an option ("-t: expected one argument", one run in 64).
        let cluster_id = std::iter::repeat_with(|| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes())
        })
        .find(|id| !id.starts_with('-'))
        .expect("an id");
        let format = broker
            .java()
            .args(["kafka.tools.StorageTool", "format", "-t", &cluster_id, "-c"])
            .arg(broker.dir.path().join("server.properties"))
            .stdout(Stdio::null())
            .output()
            .expect("run the kafka storage tool");
        assert!(
            format.status.success(),
            "kafka storage format failed: {}",
            String::from_utf8_lossy(&format.stderr)
        );
        broker.start_again().await;
        broker
    }

    /// `127.0.0.1:<port>`, for `kafka.brokers`.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the broker (again) on the same ports and data, and waits until it answers.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "the broker is running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("kafka.log"))
            .expect("open the broker log");
        let child = self
            .java()
            .args(["-Xms128m", "-Xmx384m", "kafka.Kafka"])
            .arg(self.dir.path().join("server.properties"))
            .stdout(log.try_clone().expect("clone the log"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("start the kafka broker");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            // A new client each time: one that has learnt the advertised address (a gate's, not serving
            // until the broker is up) would send every later request there, and wait for ever.
            let client: BaseProducer = userpipe::kafka::base_config(&self.brokers())
                .create()
                .expect("a kafka client");
            let answered = tokio::task::block_in_place(|| {
                client
                    .client()
                    .fetch_metadata(None, Duration::from_secs(2))
                    .is_ok_and(|m| !m.brokers().is_empty())
            });
            if answered {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("the test broker exited ({status}): {}", self.log_tail());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the test broker did not answer within {START_TIMEOUT:?}: {}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops the broker at once (SIGKILL), as a crash or a pulled cable would; its data stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn java(&self) -> Command {
        let mut command = Command::new("java");
        command
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                self.dir.path().join("log4j2.properties").display()
            ))
            .args(["-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-cp"])
            .arg(format!("{}/*", self.libs.display()));
        command
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("kafka.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A loopback proxy in front of a [`TestBroker`], through which every client reaches it (the broker
/// advertises the gate's port). Open, it passes everything. Closed, it swallows every produce request: the
/// broker never sees it and nobody answers it, so its records are surely not written, while every other
/// request (metadata, fetches, heartbeats, offset commits) passes, as with a broker that takes no writes.
/// Unlike a stopped broker, the consumer groups keep their members and commit what they store meanwhile.
pub struct ProduceGate {
    port: u16,
    closed: Arc<AtomicBool>,
    /// Its own thread: the test's blocking calls (a watermark fetch through the gate) never hold it up.
    runtime: Option<tokio::runtime::Runtime>,
}

/// A request's API key (its first two bytes after the size): 0 is Produce.
const PRODUCE: i16 = 0;

impl ProduceGate {
    /// A new broker behind a new, open gate.
    pub async fn start() -> (TestBroker, Self) {
        // Bound first, so the broker can advertise its port; it accepts once the broker is up.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the gate");
        listener
            .set_nonblocking(true)
            .expect("a nonblocking listener");
        let port = listener.local_addr().expect("the gate's address").port();
        let broker = TestBroker::start_advertising(Some(port)).await;
        let closed = Arc::new(AtomicBool::new(false));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("the gate's runtime");
        let (upstream, gate_closed) = (broker.port, closed.clone());
        runtime.spawn(async move {
            let listener = TcpListener::from_std(listener).expect("the gate's listener");
            Self::accept(listener, upstream, gate_closed).await;
        });
        (
            broker,
            Self {
                port,
                closed,
                runtime: Some(runtime),
            },
        )
    }

    /// `127.0.0.1:<port>`, for `kafka.brokers`.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// From now on, produce requests are swallowed.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    /// From now on, produce requests pass again.
    pub fn open(&self) {
        self.closed.store(false, Ordering::SeqCst);
    }

    async fn accept(listener: TcpListener, upstream: u16, closed: Arc<AtomicBool>) {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(broker) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                continue; // dropping `client` closes it, as the broker would
            };
            tokio::spawn(Self::pipe(client, broker, closed.clone()));
        }
    }

    /// One client's connection: answers go back as they come, requests go on through [`Self::requests`].
    async fn pipe(client: TcpStream, broker: TcpStream, closed: Arc<AtomicBool>) {
        let (from_client, mut to_client) = client.into_split();
        let (mut from_broker, to_broker) = broker.into_split();
        // Either side gone: both connections close.
        tokio::select! {
            _ = tokio::io::copy(&mut from_broker, &mut to_client) => {}
            _ = Self::requests(from_client, to_broker, closed) => {}
        }
    }

    /// Requests one by one (each a 4-byte big-endian size, then the request, whose first two bytes are its
    /// API key), all but produce requests while the gate is closed; until either side closes.
    async fn requests(
        mut from_client: tokio::net::tcp::OwnedReadHalf,
        mut to_broker: tokio::net::tcp::OwnedWriteHalf,
        closed: Arc<AtomicBool>,
    ) -> std::io::Result<()> {
        loop {
            let mut size = [0u8; 4];
            from_client.read_exact(&mut size).await?;
            let mut request = vec![0u8; u32::from_be_bytes(size) as usize];
            from_client.read_exact(&mut request).await?;
            let key = request.get(..2).map(|k| i16::from_be_bytes([k[0], k[1]]));
            if key == Some(PRODUCE) && closed.load(Ordering::SeqCst) {
                continue;
            }
            to_broker.write_all(&size).await?;
            to_broker.write_all(&request).await?;
        }
    }
}

impl Drop for ProduceGate {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("local address").port()
}
