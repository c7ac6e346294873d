//! The word clock's firmware: ESP-IDF on the chip, the simulated device on the host.

#[cfg(target_os = "espidf")]
mod espidf;

#[cfg(target_os = "espidf")]
fn main() {
    espidf::main();
}

#[cfg(not(target_os = "espidf"))]
fn main() -> std::process::ExitCode {
    host::main()
}

/// The simulated device's command line.
#[cfg(not(target_os = "espidf"))]
mod host {
    use std::path::PathBuf;
    use std::process::ExitCode;
    use std::time::Duration;

    use clap::Parser;
    use ota_core::engine::{Sources, Timeouts};
    use ota_core::manifest::PublicKey;
    use wordclock::sim::board::Fault;
    use wordclock::sim::run::{self, Ended, Settings};

    /// The word clock as a simulated device: its flash in a file, real HTTP and MQTT.
    ///
    /// Boots as the chip's bootloader would (otadata, rollback), runs the health checks
    /// after an update, then serves the update feature over MQTT until it reboots, which
    /// restarts it. The flash file and its NVS beside it survive every run.
    #[derive(Debug, Parser)]
    #[command(name = "wordclock", version)]
    struct Args {
        /// The flash file; created from --factory-image when missing
        #[arg(long, value_name = "FILE")]
        flash: PathBuf,
        /// The app image for the factory partition of a new flash file
        #[arg(long, value_name = "FILE")]
        factory_image: Option<PathBuf>,
        /// The partition table the firmware is built with
        #[arg(long, value_name = "FILE", default_value = "partitions/partitions.csv")]
        partitions: PathBuf,
        /// The device id: MQTT topics are home/<id>/... [default: wordclock- and six hex
        /// digits of the flash file's path, so that two simulated clocks differ]
        #[arg(long)]
        device: Option<String>,
        /// The MQTT broker
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:1883")]
        broker: String,
        /// Where the GitHub source serves version.json and images (ending in /)
        #[arg(long, value_name = "URL")]
        github: String,
        /// Where the R2 source serves them (ending in /)
        #[arg(long, value_name = "URL")]
        r2: String,
        /// The public keys the firmware trusts, one ed25519:<hex> per line
        #[arg(long, value_name = "FILE", default_value = "firmware/trusted-keys.txt")]
        trusted_keys: PathBuf,
        /// How long a source may take to accept the connection
        #[arg(long, value_name = "SECONDS", default_value_t = Timeouts::default().connect.as_secs())]
        connect_timeout: u64,
        /// How long a source may go silent mid-answer
        #[arg(long, value_name = "SECONDS", default_value_t = Timeouts::default().read.as_secs())]
        read_timeout: u64,
        /// How long one whole request may take, body included
        #[arg(long, value_name = "SECONDS", default_value_t = Timeouts::default().request.as_secs())]
        request_timeout: u64,
        /// How long the preferred source has to deliver the manifest before the other is
        /// asked (it is asked again if the other offers no update)
        #[arg(long, value_name = "SECONDS", default_value_t = Timeouts::default().first_answer.as_secs_f64())]
        first_answer: f64,
        /// How long each health check may take after an update
        #[arg(long, value_name = "SECONDS", default_value_t = 30)]
        health_deadline: u64,
        /// Fault switch: this version breaks this part of the clock (network, mqtt, rtc
        /// or leds), so it fails that health check and is rolled back
        #[arg(long, value_name = "VERSION:CHECK")]
        fail_health: Option<Fault>,
        /// Fault switch: cut the power after this many more flash bytes
        #[arg(long, value_name = "BYTES")]
        power_cut_after: Option<u64>,
        /// Stop after this many boots
        #[arg(long)]
        boots: Option<usize>,
        /// Seconds between the clock's own update checks (its NVS setting
        /// ota_check_every; 0 for none) [default: what the NVS holds, else 6 hours]
        #[arg(long, value_name = "SECONDS")]
        check_every: Option<u64>,
    }

    pub fn main() -> ExitCode {
        let args = Args::parse();
        match settings(args).and_then(|s| run::run(&s)) {
            Ok(Ended::Boots(_)) => ExitCode::SUCCESS,
            // A power cut is not a failure of the simulator, but a caller must see it.
            Ok(Ended::PowerCut) => ExitCode::from(3),
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    }

    fn settings(args: Args) -> Result<Settings, String> {
        let (host, port) = args
            .broker
            .rsplit_once(':')
            .ok_or("--broker is HOST:PORT")?;
        let port = port.parse().map_err(|_| "--broker is HOST:PORT")?;
        let keys = std::fs::read_to_string(&args.trusted_keys)
            .map_err(|e| format!("cannot read {}: {e}", args.trusted_keys.display()))?;
        let trusted = PublicKey::parse_list(&keys)
            .map_err(|(line, e)| format!("{}, line {line}: {e}", args.trusted_keys.display()))?;
        let device_id = args.device.unwrap_or_else(|| {
            let path = std::path::absolute(&args.flash).unwrap_or_else(|_| args.flash.clone());
            wordclock::identity::default_device_id(path.as_os_str().as_encoded_bytes())
        });
        Ok(Settings {
            flash: args.flash,
            partitions: args.partitions,
            flash_size: 8 << 20,
            factory_image: args.factory_image,
            device_id,
            broker: (host.to_owned(), port),
            sources: Sources {
                github: args.github,
                r2: args.r2,
            },
            trusted,
            timeouts: Timeouts {
                connect: Duration::from_secs(args.connect_timeout),
                read: Duration::from_secs(args.read_timeout),
                request: Duration::from_secs(args.request_timeout),
                first_answer: Duration::try_from_secs_f64(args.first_answer)
                    .map_err(|_| "--first-answer is a number of seconds")?,
            },
            health_deadline: Duration::from_secs(args.health_deadline),
            fault: args.fail_health,
            power_cut_after: args.power_cut_after,
            boots: args.boots,
            check_every: args.check_every,
        })
    }
}
