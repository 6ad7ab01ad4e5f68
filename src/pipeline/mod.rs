pub mod agents;
pub mod detect;
pub mod quality;
pub mod render;
pub mod repair;
