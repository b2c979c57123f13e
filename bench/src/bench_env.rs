//! The environment of one run: our own kube-apiserver + etcd with kubesim (on this
//! process' runtime), one redis-server, and a directory for configs and logs. Each
//! scenario works in its own [`Lane`]: a namespace and its own streams.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use testenv::{RedisServer, TestEnv, TestEnvOptions};

use crate::args::Args;

/// Everything a scenario needs. Dropping it kills the servers.
pub struct BenchEnv {
    pub env: TestEnv,
    pub redis: RedisServer,
    /// ottoscaler configs and logs (kept after the run, for a look at what happened).
    pub dir: PathBuf,
    /// The binary under test.
    pub ottoscaler: PathBuf,
}

/// One scenario's namespace and streams.
#[derive(Debug, Clone)]
pub struct Lane {
    pub name: String,
    pub namespace: String,
    pub stream: String,
    pub results: String,
}

impl BenchEnv {
    /// Starts Redis, the control plane and kubesim (with testenv's defaults: 3 nodes,
    /// 32 writes in flight).
    pub async fn start(args: &Args) -> Result<BenchEnv> {
        let dir = args
            .results_path()
            .parent()
            .map(|p| p.join("logs"))
            .unwrap_or_else(|| PathBuf::from("bench-logs"));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot clear {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let redis = tokio::task::spawn_blocking(|| RedisServer::try_start(false))
            .await
            .context("starting redis-server panicked")??;
        let env = tokio::time::timeout(
            Duration::from_secs(180),
            TestEnv::start(TestEnvOptions::default()),
        )
        .await
        .context("the control plane did not start within 180 s")??;
        Ok(BenchEnv {
            env,
            redis,
            dir,
            ottoscaler: args.ottoscaler.clone(),
        })
    }

    /// A new namespace and stream names for scenario `name`.
    pub async fn lane(&self, name: &str) -> Result<Lane> {
        let namespace = self.env.try_namespace(&format!("bench-{name}")).await?;
        Ok(Lane {
            name: name.to_string(),
            stream: format!("bench:{name}:events"),
            results: format!("bench:{name}:results"),
            namespace,
        })
    }

    pub fn client(&self) -> kube::Client {
        self.env.client()
    }

    pub fn log_dir(&self) -> &Path {
        &self.dir
    }

    /// Stops kubesim, the control plane and Redis gracefully; keeps the API server's and
    /// etcd's logs next to ottoscaler's.
    pub async fn stop(self) {
        let logs = self.env.control_plane().dir().join("logs");
        for name in ["kube-apiserver.log", "etcd.log"] {
            let _ = std::fs::copy(logs.join(name), self.dir.join(name));
        }
        let BenchEnv { env, mut redis, .. } = self;
        if let Err(err) = env.stop().await {
            eprintln!("bench: stopping the control plane: {err:#}");
        }
        let _ = tokio::task::spawn_blocking(move || redis.stop()).await;
    }
}
