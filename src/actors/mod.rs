//! The actors, one per module, each owning one concern.
//!
//! - [`leader`]: competes for the Lease; only the leader reads, creates, deletes, publishes.
//! - [`redis_reader`]: consumes the event stream (at least once) and feeds the Supervisor.
//! - [`supervisor`]: runs and supervises one [`worker_pod`] actor per pod.
//! - [`worker_pod`]: one pod's create -> watch -> outcome -> delete lifecycle.
//! - [`pod_watcher`]: the one shared pod watch.
//! - [`results_publisher`]: writes each result to the results stream, exactly once.
//! - [`event_recorder`]: a Kubernetes Event on the pod of each worker that did not succeed.

pub mod event_recorder;
pub mod leader;
pub mod pod_watcher;
pub mod redis_reader;
pub mod results_publisher;
pub mod supervisor;
pub mod worker_pod;
