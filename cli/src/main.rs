//! The `clockrel` command line: parses arguments, runs a command, maps the outcome to an exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use clockrel::check::{self, CheckOptions};
use clockrel::config::Config;
use clockrel::exit::{Exit, Failure};
use clockrel::rules::Headroom;
use clockrel::units::FlashSize;
use ota_core::Chip;

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  unexpected error (I/O, environment)
  2  usage error
  3  a check failed: the input was read and a rule of the release gate failed
  4  bad input: a file could not be read or is malformed";

/// Release ESP32-S3 firmware over the air, safely.
///
/// clockrel checks an app image against its partition table, signs a manifest, and
/// publishes to GitHub and Cloudflare R2, verifying that devices get exactly the bytes
/// that were signed.
#[derive(Debug, Parser)]
#[command(name = "clockrel", version, after_help = EXIT_CODES)]
struct Cli {
    /// The release config [default: clockrel.toml in this directory or the nearest parent]
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Print a machine-readable JSON report on stdout instead of text.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Check(CheckArgs),
}

/// Check that an image and a partition table are safe to ship.
///
/// Reads an app image (or makes one from an ELF, exactly as a release will), reads the
/// partition table, and judges every rule of the release gate: the table is one ESP-IDF
/// accepts, no partitions overlap, app partitions sit on 64 KiB boundaries, otadata
/// exists when there are OTA slots, ota_0 and ota_1 exist with the same size, the
/// factory partition is never an OTA target, everything fits in the flash, the image is
/// built for the right chip, and every OTA slot holds the image with headroom to spare.
///
/// Settings not given here come from clockrel.toml ([firmware] chip, [flash] size,
/// partitions, headroom).
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  clockrel check --image build/wordclock.bin --partitions partitions/partitions.csv
  clockrel check --elf target/xtensa-esp32s3-espidf/release/wordclock --flash-size 8MB
  clockrel check --image ota_files/wordclock-v2.9.0.bin --headroom 25 --json

Exit codes: 0 all rules pass, 3 a rule failed, 4 an input is unreadable, 2 usage.")]
struct CheckArgs {
    /// The app image to check (the .bin that goes into an OTA slot)
    #[arg(long, value_name = "FILE", conflicts_with = "elf")]
    image: Option<PathBuf>,

    /// Make the app image from this firmware ELF with espflash, then check it
    #[arg(long, value_name = "FILE")]
    elf: Option<PathBuf>,

    /// The partition table, as ESP-IDF CSV or the binary flashed at 0x8000
    #[arg(long, value_name = "FILE")]
    partitions: Option<PathBuf>,

    /// The flash chip's size, such as 4MB, 8MB, 16MB [default: config, then the image header]
    #[arg(long, value_name = "SIZE")]
    flash_size: Option<FlashSize>,

    /// The chip every image must be built for [default: config, then esp32s3]
    #[arg(long, value_name = "CHIP")]
    chip: Option<Chip>,

    /// Room every OTA slot must keep above the image, in percent of the image [default: config, then 20]
    #[arg(long, value_name = "PERCENT")]
    headroom: Option<Headroom>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(exit) => ExitCode::from(exit.code()),
        Err(failure) => {
            eprintln!("{failure}");
            ExitCode::from(failure.exit.code())
        }
    }
}

fn run(cli: Cli) -> Result<Exit, Failure> {
    let config = load_config(cli.config.as_deref())?;
    match cli.command {
        Command::Check(args) => {
            let options = CheckOptions {
                image: args.image,
                elf: args.elf,
                partitions: args.partitions,
                flash_size: args.flash_size,
                chip: args.chip,
                headroom: args.headroom,
            };
            let report = check::run(&options, config.as_ref())?;
            if cli.json {
                let json = serde_json::to_string_pretty(&report)
                    .context("cannot encode the report as JSON")
                    .map_err(|e| Failure::new(Exit::Error, e))?;
                println!("{json}");
            } else {
                print!("{}", check::render(&report));
            }
            Ok(if report.ok {
                Exit::Success
            } else {
                Exit::CheckFailed
            })
        }
    }
}

/// The config named by `--config`, else the one found from the current directory, if any.
fn load_config(explicit: Option<&std::path::Path>) -> Result<Option<Config>, Failure> {
    let path = match explicit {
        Some(path) => Some(path.to_owned()),
        None => std::env::current_dir()
            .ok()
            .and_then(|dir| Config::discover(&dir)),
    };
    path.map(|path| {
        Config::load(&path).map_err(|e| {
            Failure::new(Exit::BadInput, e)
                .hint("see the README's `clockrel.toml` section for every key")
        })
    })
    .transpose()
}
