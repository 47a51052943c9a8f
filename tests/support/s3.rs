//! A bucket on a moto S3 server for the object-store tests, and cluster
//! nodes that keep their blobs in it.

use std::path::Path;

use super::Server;

#[path = "../../crates/skewless-store/tests/moto/mod.rs"]
mod moto;

pub use moto::Moto;

/// Key prefix of the blobs in the bucket.
pub const PREFIX: &str = "blobs";

/// A moto server with one bucket.
pub struct Bucket {
    pub moto: Moto,
    pub name: String,
}

impl Bucket {
    pub fn start() -> Bucket {
        let moto = Moto::start();
        let name = "skewless-test".to_owned();
        moto.create_bucket(&name);
        Bucket { moto, name }
    }

    /// The `--blobs` value.
    pub fn url(&self) -> String {
        format!("s3://{}/{PREFIX}", self.name)
    }

    /// The environment a node reaches the bucket with.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.moto.endpoint()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    /// Objects under the blob prefix (up to 1000).
    pub fn objects(&self) -> usize {
        self.moto.count(&self.name, PREFIX)
    }
}

/// A cluster node over `db` keeping its blobs in `bucket`.
pub fn node(db: &str, bucket: &Bucket, id: &str, extra: &[&str]) -> Server {
    let env = bucket.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    super::cluster::node_env(db, Path::new(&bucket.url()), id, extra, &env)
}
