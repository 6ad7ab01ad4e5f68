use clap::Parser;

use synapticllamas::cli::{Cli, Sub};
use synapticllamas::shell::{self, ShellOptions, StdSink};
use synapticllamas::{sim, startup, ui};

fn main() {
    let cli = Cli::parse();
    ui::init(cli.no_color);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("❌ cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    match &cli.sub {
        Some(Sub::SimServe(args)) => std::process::exit(rt.block_on(sim::serve::run(args))),
        Some(Sub::RpcRegister(args)) => {
            std::process::exit(rt.block_on(synapticllamas::redis::register::run(args)))
        }
        None => {}
    }
    let mut sink = StdSink;
    let mut app = rt.block_on(startup::build(&cli, &mut sink));
    shell::notices_to_stderr(&app);
    if let Some(query) = &cli.input {
        let code = rt.block_on(shell::one_query(&mut app, query, &mut sink));
        rt.block_on(app.shutdown());
        drop(app);
        rt.shutdown_timeout(std::time::Duration::from_millis(200));
        std::process::exit(code);
    }
    let code = shell::run(&rt, &mut app, ShellOptions { bail: cli.bail });
    rt.block_on(app.shutdown());
    drop(app);
    synapticllamas::sharding::coordinator::kill_owned();
    rt.shutdown_timeout(std::time::Duration::from_millis(200));
    std::process::exit(code);
}
