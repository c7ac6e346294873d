//! `clockrel check`: the release gate that judges an image and a partition table before
//! anything is published.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use esp_idf_part::PartitionTable;
use ota_core::Chip;
use ota_core::image::{ImageInfo, ImageReader};
use serde::Serialize;

use crate::config::Config;
use crate::exit::{Exit, Failure};
use crate::partitions::{self, TableError};
use crate::rules::{self, Finding, Headroom, Rule, SlotUsage, Status};
use crate::units::{Bytes, FlashSize};

/// The chip of the word clock, used when neither the command line nor the config names one.
pub const DEFAULT_CHIP: Chip = Chip::Esp32S3;
/// An ELF or image larger than this is not firmware: refuse before reading it all.
const MAX_INPUT: u64 = 64 << 20;

/// What to check, as given on the command line.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    pub image: Option<PathBuf>,
    pub elf: Option<PathBuf>,
    pub partitions: Option<PathBuf>,
    pub flash_size: Option<FlashSize>,
    pub chip: Option<Chip>,
    pub headroom: Option<Headroom>,
}

/// Where a setting came from, so the report can say why a number was used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    CommandLine,
    Config,
    ImageHeader,
    Default,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Source::CommandLine => "command line",
            Source::Config => "clockrel.toml",
            Source::ImageHeader => "image header",
            Source::Default => "default",
        })
    }
}

/// A setting and where it came from.
#[derive(Debug, Clone, Serialize)]
pub struct Sourced<T> {
    pub value: T,
    pub from: Source,
}

/// Picks the command line's value, else the config's, else the fallback.
fn pick<T>(
    flag: Option<T>,
    config: Option<T>,
    fallback: Option<(T, Source)>,
) -> Option<Sourced<T>> {
    flag.map(|value| Sourced {
        value,
        from: Source::CommandLine,
    })
    .or_else(|| {
        config.map(|value| Sourced {
            value,
            from: Source::Config,
        })
    })
    .or_else(|| fallback.map(|(value, from)| Sourced { value, from }))
}

/// Everything `check` found, for people and for `--json`.
#[derive(Debug, Serialize)]
pub struct CheckReport {
    /// True when no rule failed.
    pub ok: bool,
    pub chip: Sourced<String>,
    pub flash_size: Option<Sourced<FlashSize>>,
    pub headroom: Sourced<Headroom>,
    pub image: Option<ImageSummary>,
    pub partitions: Option<TableSummary>,
    pub slots: Vec<SlotUsage>,
    pub rules: Vec<Finding>,
}

impl CheckReport {
    pub fn failed(&self) -> impl Iterator<Item = &Finding> {
        self.rules.iter().filter(|f| f.status == Status::Fail)
    }
}

#[derive(Debug, Serialize)]
pub struct ImageSummary {
    pub path: PathBuf,
    /// The ELF the image was made from, with `--elf`.
    pub elf: Option<PathBuf>,
    pub chip: String,
    pub chip_id: u16,
    pub version: String,
    pub project_name: String,
    pub secure_version: u32,
    pub build_date: String,
    pub build_time: String,
    pub idf_version: String,
    pub size: Bytes,
    /// SHA-256 of the whole file: what the manifest pins.
    pub sha256: String,
    /// SHA-256 appended by the build, over everything before it.
    pub appended_sha256: Option<String>,
    pub elf_sha256: String,
    pub flash_mode: String,
    pub flash_size: String,
    pub flash_freq: String,
    pub entry: String,
    pub min_chip_rev: u16,
    pub max_chip_rev: u16,
    /// The two above as ESP-IDF reads them: "v0.0 to v0.99".
    pub chip_revisions: String,
    pub segments: Vec<SegmentSummary>,
}

#[derive(Debug, Serialize)]
pub struct SegmentSummary {
    pub index: u8,
    pub load_addr: String,
    pub file_offset: String,
    pub len: u32,
}

impl ImageSummary {
    fn new(path: &Path, elf: Option<&Path>, info: &ImageInfo) -> ImageSummary {
        let d = &info.descriptor;
        let h = &info.header;
        ImageSummary {
            path: path.to_owned(),
            elf: elf.map(Path::to_owned),
            chip: h.chip.to_string(),
            chip_id: h.chip.id(),
            version: d.version.to_string(),
            project_name: d.project_name.to_string(),
            secure_version: d.secure_version,
            build_date: d.date.to_string(),
            build_time: d.time.to_string(),
            idf_version: d.idf_ver.to_string(),
            size: Bytes(info.len),
            sha256: info.sha256.to_string(),
            appended_sha256: info.appended_sha256.map(|s| s.to_string()),
            elf_sha256: ota_core::Sha256(d.app_elf_sha256).to_string(),
            flash_mode: h.spi_mode.to_string(),
            flash_size: h.flash_size.to_string(),
            flash_freq: h.flash_freq.to_string(),
            entry: format!("{:#010x}", h.entry_addr),
            min_chip_rev: h.min_chip_rev_full,
            max_chip_rev: h.max_chip_rev_full,
            chip_revisions: h.chip_revisions().to_string(),
            segments: info
                .segments
                .as_slice()
                .iter()
                .map(|s| SegmentSummary {
                    index: s.index,
                    load_addr: format!("{:#010x}", s.load_addr),
                    file_offset: format!("{:#x}", s.data_offset),
                    len: s.len,
                })
                .collect(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct TableSummary {
    pub path: PathBuf,
    pub partitions: Vec<PartitionRow>,
}

#[derive(Debug, Serialize)]
pub struct PartitionRow {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub subtype: String,
    pub offset: String,
    pub size: Bytes,
    pub end: String,
}

impl TableSummary {
    fn new(path: &Path, table: &PartitionTable) -> TableSummary {
        TableSummary {
            path: path.to_owned(),
            partitions: table
                .partitions()
                .iter()
                .map(|p| PartitionRow {
                    name: p.name(),
                    ty: p.ty().to_string(),
                    subtype: p.subtype().to_string(),
                    offset: format!("{:#x}", p.offset()),
                    size: Bytes(p.size().into()),
                    end: format!("{:#x}", u64::from(p.offset()) + u64::from(p.size())),
                })
                .collect(),
        }
    }
}

/// The image that was checked, as bytes, so that `stage` ships exactly what was judged.
#[derive(Debug)]
pub struct LoadedImage {
    pub bytes: Vec<u8>,
    pub info: ImageInfo,
    /// The file it was read from; `None` when it was made from `--elf`.
    pub path: Option<PathBuf>,
}

/// The verdict, and the image it is about.
#[derive(Debug)]
pub struct Checked {
    pub report: CheckReport,
    pub image: Option<LoadedImage>,
}

/// Reads the inputs and judges them. `Err` means an input could not be read at all;
/// failed rules are in the report.
pub fn run(options: &CheckOptions, config: Option<&Config>) -> Result<Checked, Failure> {
    let firmware = config.map(|c| &c.firmware);
    let flash = config.map(|c| &c.flash);
    let chip = pick(
        options.chip,
        firmware.and_then(|f| f.chip),
        Some((DEFAULT_CHIP, Source::Default)),
    )
    .expect("a default chip is given");
    let headroom = pick(
        options.headroom,
        flash.and_then(|f| f.headroom),
        Some((Headroom::default(), Source::Default)),
    )
    .expect("a default headroom is given");
    let configured_size = pick(options.flash_size, flash.and_then(|f| f.size), None);
    let table_path = options
        .partitions
        .clone()
        .or_else(|| flash.and_then(|f| f.partitions.clone()));

    if options.image.is_none() && options.elf.is_none() && table_path.is_none() {
        return Err(Failure::new(Exit::Usage, anyhow::anyhow!("nothing to check"))
            .hint("give --image FILE or --elf FILE, and --partitions FILE (or set flash.partitions in clockrel.toml)"));
    }

    let image = load_image(
        options,
        configured_size.as_ref().map(|s| s.value),
        chip.value,
    )?;
    // An image made from --elf carries the size it was made with, not a fact of its own.
    let flash_size = configured_size.or_else(|| {
        let image = image.as_ref().filter(|image| image.path.is_some())?;
        let bytes = image.info.header.flash_size.bytes()?;
        let size = FlashSize::from_bytes(bytes).ok()?;
        Some(Sourced {
            value: size,
            from: Source::ImageHeader,
        })
    });

    let mut findings = Vec::new();
    let mut slots = Vec::new();
    if let Some(image) = &image {
        findings.push(match image.path {
            Some(_) => chip_rule(&image.info, &chip),
            None => Finding::skip(
                Rule::Chip,
                format!("the image was made for {} from the ELF", chip.value),
            ),
        });
        findings.extend(rules::image_loader(&image.info));
    }
    let table = match &table_path {
        Some(path) => load_table(path, &mut findings)?,
        None => {
            let missing =
                "no partition table given (--partitions or flash.partitions in clockrel.toml)";
            findings.push(Finding::skip(Rule::Table, missing));
            if image.is_some() {
                findings.push(Finding::skip(Rule::Headroom, missing));
            }
            None
        }
    };
    if let Some(table) = &table {
        let parts = table.partitions();
        findings.extend(rules::check_table(
            parts,
            flash_size.as_ref().map(|s| s.value),
        ));
        if let Some(image) = &image {
            let (usage, finding) = rules::headroom(parts, image.info.len, headroom.value);
            slots = usage;
            findings.push(finding);
        } else {
            findings.push(Finding::skip(
                Rule::Headroom,
                "no image given (--image or --elf)",
            ));
        }
    }

    let image_summary = image.as_ref().map(|image| {
        ImageSummary::new(
            image.path.as_deref().unwrap_or(Path::new("-")),
            options.elf.as_deref(),
            &image.info,
        )
    });
    let report = CheckReport {
        ok: !findings.iter().any(|f| f.status == Status::Fail),
        chip: Sourced {
            value: chip.value.to_string(),
            from: chip.from,
        },
        flash_size,
        headroom,
        image: image_summary,
        partitions: table
            .as_ref()
            .zip(table_path.as_deref())
            .map(|(t, p)| TableSummary::new(p, t)),
        slots,
        rules: findings,
    };
    Ok(Checked { report, image })
}

/// The image as bytes: read from `--image` or made from `--elf`, then parsed.
fn load_image(
    options: &CheckOptions,
    flash: Option<FlashSize>,
    chip: Chip,
) -> Result<Option<LoadedImage>, Failure> {
    let (bytes, path) = match (&options.image, &options.elf) {
        (Some(_), Some(_)) => {
            return Err(
                Failure::new(Exit::Usage, anyhow::anyhow!("--image and --elf both given"))
                    .hint("check one image at a time"),
            );
        }
        (Some(path), None) => (read_input(path)?, Some(path.clone())),
        (None, Some(elf_path)) => {
            let elf = read_input(elf_path)?;
            // espflash writes a flash size into the header; 4MB is its default too.
            let size = flash.unwrap_or(FlashSize::from_bytes(4 << 20).expect("4MB"));
            let image = crate::elf::app_image(&elf, chip, size, &elf_path.display().to_string())
                .map_err(|e| {
                    Failure::new(Exit::BadInput, e)
                        .hint("is this the ELF that cargo built for the firmware?")
                })?;
            (image, None)
        }
        (None, None) => return Ok(None),
    };
    // The loader's rules become findings beside the others, not a refusal to read.
    let mut reader = ImageReader::new()
        .expect_len(bytes.len() as u64)
        .defer_loader_rules();
    let info = reader.feed(&bytes).and_then(|()| reader.finish()).map_err(|e| {
        let what = path.as_deref().or(options.elf.as_deref()).unwrap_or(Path::new("-"));
        Failure::new(Exit::BadInput, anyhow::Error::new(e).context(what.display().to_string()))
            .hint("an OTA slot takes an ESP-IDF app image (.bin), not an ELF, a merged flash dump or a bootloader")
    })?;
    Ok(Some(LoadedImage { bytes, info, path }))
}

fn read_input(path: &Path) -> Result<Vec<u8>, Failure> {
    let context = || path.display().to_string();
    let len = std::fs::metadata(path)
        .map_err(|e| Failure::new(Exit::BadInput, anyhow::Error::new(e).context(context())))?
        .len();
    if len > MAX_INPUT {
        return Err(Failure::new(
            Exit::BadInput,
            anyhow::anyhow!(
                "{} is {}, larger than any firmware",
                path.display(),
                Bytes(len)
            ),
        ));
    }
    std::fs::read(path)
        .map_err(|e| Failure::new(Exit::BadInput, anyhow::Error::new(e).context(context())))
}

/// Loads the table; a table ESP-IDF refuses becomes a failed rule, an unreadable one an error.
fn load_table(path: &Path, findings: &mut Vec<Finding>) -> Result<Option<PartitionTable>, Failure> {
    match partitions::load(path) {
        Ok(table) => Ok(Some(table)),
        Err(TableError::Refused { source, .. }) => {
            let rule = match source {
                esp_idf_part::Error::OverlappingPartitions(..) => Some(Rule::NoOverlaps),
                esp_idf_part::Error::UnalignedPartition => Some(Rule::AppAlignment),
                esp_idf_part::Error::DuplicatePartitions(_)
                | esp_idf_part::Error::InvalidOtadataPartitionSize
                | esp_idf_part::Error::MultipleFactoryPartitions
                | esp_idf_part::Error::MultipleOtadataPartitions
                | esp_idf_part::Error::NoAppPartition
                | esp_idf_part::Error::PartitionTooLarge(_) => Some(Rule::Table),
                _ => None,
            };
            match rule {
                Some(rule) => {
                    let detail = format!("{}: {source}", path.display());
                    if rule != Rule::Table {
                        findings.push(Finding::fail(Rule::Table, format!("ESP-IDF refuses the table (see {rule})")));
                    }
                    findings.push(Finding::fail(rule, detail));
                    Ok(None)
                }
                None => Err(Failure::new(Exit::BadInput, anyhow::anyhow!("partition table {}: {source}", path.display()))
                    .hint("a partition table is ESP-IDF CSV (name, type, subtype, offset, size, flags) or the 3 KiB binary flashed at 0x8000")),
            }
        }
        Err(other) => Err(Failure::new(Exit::BadInput, other)),
    }
}

fn chip_rule(info: &ImageInfo, expected: &Sourced<Chip>) -> Finding {
    let found = info.header.chip;
    if found == expected.value {
        Finding::pass(Rule::Chip, format!("the image is built for {found}"))
    } else {
        Finding::fail(
            Rule::Chip,
            format!(
                "the image is built for {found}, but {} expects {}",
                expected.from, expected.value
            ),
        )
    }
}

/// The report as people read it: the image, the table, the slots, then the verdict per rule.
pub fn render(report: &CheckReport) -> String {
    let mut out = String::new();
    if let Some(image) = &report.image {
        render_image(&mut out, image);
    }
    if let Some(table) = &report.partitions {
        let flash = report
            .flash_size
            .as_ref()
            .map_or("flash size unknown".to_owned(), |s| {
                format!("{} flash, from {}", s.value, s.from)
            });
        let _ = writeln!(out, "partitions  {}  ({flash})", table.path.display());
        let _ = writeln!(
            out,
            "  {:<12} {:<5} {:<9} {:>9} {:>9} {:>12}",
            "name", "type", "subtype", "offset", "end", "size"
        );
        for p in &table.partitions {
            let _ = writeln!(
                out,
                "  {:<12} {:<5} {:<9} {:>9} {:>9} {:>12}",
                p.name,
                p.ty,
                p.subtype,
                p.offset,
                p.end,
                p.size.to_string()
            );
        }
        out.push('\n');
    }
    if !report.slots.is_empty() {
        let _ = writeln!(
            out,
            "OTA slots   (headroom {}, from {})",
            report.headroom.value, report.headroom.from
        );
        for s in &report.slots {
            let _ = writeln!(
                out,
                "  {:<12} {:>10} used {:>10} ({:>5.1} %)  free {:>10}  needs {:>10}  {}",
                s.name,
                s.size.to_string(),
                s.used.to_string(),
                s.used_percent,
                s.free.to_string(),
                s.required.to_string(),
                if s.fits { "ok" } else { "TOO SMALL" }
            );
        }
        out.push('\n');
    }
    let _ = writeln!(out, "rules");
    for f in &report.rules {
        let status = match f.status {
            Status::Pass => "pass",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        };
        let _ = writeln!(out, "  {status:<4}  {:<15} {}", f.rule.id(), f.detail);
    }
    let failed = report.failed().count();
    let _ = if failed == 0 {
        writeln!(
            out,
            "\nverdict: safe to ship ({} rules passed)",
            report
                .rules
                .iter()
                .filter(|f| f.status == Status::Pass)
                .count()
        )
    } else {
        writeln!(out, "\nverdict: NOT safe to ship: {failed} rule(s) failed")
    };
    out
}

fn render_image(out: &mut String, image: &ImageSummary) {
    let from = image.elf.as_ref().map_or(String::new(), |elf| {
        format!("  (made from {})", elf.display())
    });
    let path = if image.elf.is_some() {
        String::from("image")
    } else {
        image.path.display().to_string()
    };
    let _ = writeln!(out, "image       {path}{from}");
    let rows = [
        (
            "chip",
            format!(
                "{} (id {}), revisions {}",
                image.chip, image.chip_id, image.chip_revisions
            ),
        ),
        ("version", image.version.clone()),
        ("project", image.project_name.clone()),
        ("secure_version", image.secure_version.to_string()),
        (
            "built",
            format!(
                "{} {}, ESP-IDF {}",
                image.build_date, image.build_time, image.idf_version
            ),
        ),
        ("size", format!("{:#}", image.size)),
        ("sha256", format!("{}  (of the file)", image.sha256)),
        (
            "flash",
            format!(
                "{} {} {}, entry {}",
                image.flash_mode, image.flash_size, image.flash_freq, image.entry
            ),
        ),
    ];
    for (name, value) in rows {
        let _ = writeln!(out, "  {name:<15} {value}");
    }
    let _ = writeln!(out, "  segments        {}", image.segments.len());
    for s in &image.segments {
        let _ = writeln!(
            out,
            "    {:>2}  load {}  file {:>8}  {:>8} B",
            s.index, s.load_addr, s.file_offset, s.len
        );
    }
    out.push('\n');
}
