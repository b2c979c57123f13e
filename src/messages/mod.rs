//! Every message the actors exchange, grouped by the actor that receives it.
//!
//! Actors talk only through these types. Fields are named and documented; results are
//! typed, so a test can stand in for any actor by handling the same messages.

pub mod event;
pub mod events;
pub mod health;
pub mod leader;
pub mod reader;
pub mod results;
pub mod supervisor;
pub mod watch;
pub mod worker;

pub use event::{EventError, EventLimits, ScaleEvent, ScaleKind};
pub use results::{Outcome, PublishError, WorkerFinished};
pub use watch::{PodObservation, PodPhase, PodWatchEvent, Terminated};
