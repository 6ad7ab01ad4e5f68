//! Discovery commands (filled in with the scanner).

use super::{App, Sink};

impl App {
    pub(super) async fn discover_for_mode(&mut self, sink: &mut dyn Sink) -> bool {
        sink.err("❌ mode distributed: subnet discovery is not built yet in this version");
        false
    }
}
