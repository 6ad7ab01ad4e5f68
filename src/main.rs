use clap::Parser;

use synapticllamas::cli::{Cli, Sub};
use synapticllamas::shell::{self, ShellOptions, StdSink};
use synapticllamas::{sim, startup, ui};

fn main() {
    let cli = Cli::parse();
    if let Some(Sub::Completions(c)) = &cli.sub {
        use std::io::Write;
        // A closed stdout (`| head`) is not an error worth a word.
        let _ = std::io::stdout().write_all(&c.script());
        std::process::exit(0);
    }
    ui::init(cli.no_color || synapticllamas::config::env::Env::process().no_color);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            ui::err_line(&format!("❌ cannot start the async runtime: {e}"));
            std::process::exit(1);
        }
    };
    match &cli.sub {
        Some(Sub::SimServe(args)) => {
            std::process::exit(rt.block_on(sim::serve::run(args.options())))
        }
        Some(Sub::RpcRegister(args)) => {
            std::process::exit(rt.block_on(synapticllamas::redis::register::run(args.options())))
        }
        Some(Sub::Serve(_)) | Some(Sub::Completions(_)) | None => {}
    }
    // With -i, stdout is the query's JSON alone: what start-up prints on the
    // way (discovery, --add-node, --load-config, …) goes to stderr.
    let mut sink = match (&cli.sub, &cli.input) {
        (None, Some(_)) => StdSink::json_only(),
        _ => StdSink::default(),
    };
    let mut app = rt.block_on(startup::build(&cli, &mut sink));
    shell::notices_to_stderr(&app);
    let code = match (&cli.sub, &cli.input) {
        (Some(Sub::Serve(args)), _) => rt.block_on(app.serve_headless(args.options(), &mut sink)),
        (_, Some(query)) => shell::one_query(&rt, &mut app, query),
        _ => shell::run(&rt, &mut app, ShellOptions { bail: cli.bail }),
    };
    // Every way out (exit, end of input, a closed stdout, Ctrl-C, -i) ends here:
    // stop the dashboard and any coordinator this shell started.
    rt.block_on(app.shutdown());
    drop(app);
    rt.block_on(synapticllamas::sharding::coordinator::kill_owned());
    rt.shutdown_timeout(std::time::Duration::from_millis(200));
    std::process::exit(code);
}
