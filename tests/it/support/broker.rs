//! A private, throwaway Kafka broker for tests that take Kafka down: the same jars as `scripts/stack`
//! (`$USERPIPE_STACK_DIR/kafka/libs`), one KRaft node on free loopback ports, with its own data folder and
//! cluster id. Stopped and started on demand; killed when dropped. The stack's shared broker is never
//! touched.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use rdkafka::producer::{BaseProducer, Producer};
use tempfile::TempDir;

/// How long a start may take on a loaded machine (two JVMs: the storage format, then the broker).
const START_TIMEOUT: Duration = Duration::from_secs(120);

pub struct TestBroker {
    dir: TempDir,
    libs: PathBuf,
    pub port: u16,
    child: Option<Child>,
}

impl TestBroker {
    /// Formats a new broker's storage, starts it, and waits until it answers.
    pub async fn start() -> Self {
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
        let data = dir.path().join("data");
        std::fs::write(
            dir.path().join("server.properties"),
            format!(
                "process.roles=broker,controller\nnode.id=1\n\
                 controller.quorum.voters=1@127.0.0.1:{controller}\n\
                 listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}\n\
                 advertised.listeners=PLAINTEXT://127.0.0.1:{port}\n\
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
        let client: BaseProducer = userpipe::kafka::base_config(&self.brokers())
            .create()
            .expect("a kafka client");
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
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

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("local address").port()
}
