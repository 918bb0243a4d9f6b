use gapless::testkit::*;
use gapless::*;
use std::time::Duration;
fn main() {
    let cfg = SimConfig {
        seed: 11288232986032719986,
        convos: 2,
        messages: 99,
        send_interval_ms: 110,
        catch_up_only_every: 2,
        faults: Faults {
            drop: 96,
            duplicate: 2,
            slow_consumer: 0,
            cut: 1,
            connect_fail: 1,
            fetch_fail: 1,
            rate_limit: 1,
            unauthorized: 1,
            max_delay_ms: 0,
            fetch_delay_ms: 102,
            server: ServerFaults {
                hole: 0,
                shared: 20,
                late: 0,
                expire: 24,
                ephemeral: 1,
                epoch_back: 55,
                commit: 1,
            },
        },
        faults_until: Time::from_millis(6381),
        restarts: vec![],
        settle: Duration::from_secs(300),
        keepalive: Duration::from_secs(15),
        keep_trace: true,
        gap_info: false,
        realistic: false,
        machine: Config {
            max_buffered: 1,
            max_buffered_total: 1,
            max_inflight_fetches: 1,
            page_limit: 9,
            max_page_limit: 10,
            shared_stream: true,
            ..Config::default()
        },
    };
    let r = Sim::run(cfg);
    let n = r.trace.len();
    for l in r.trace.iter().filter(|l| l.contains(" c1 ")) {
        println!("{l}");
    }
    let _ = n;
    println!("{:?}", r.violations.first());
}
