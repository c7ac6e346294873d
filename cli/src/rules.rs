//! The release gate's rules for a partition layout and the image that must fit it.
//!
//! Each rule gives a [`Finding`] that names the partitions and the numbers, so that a
//! failure says what to change ("ota_1 ends at 0x420000, past the 4MB flash").

use std::fmt;
use std::str::FromStr;

use esp_idf_part::{AppType, DataType, Partition, SubType, Type};
use ota_core::image::memory::MemoryMap;
use ota_core::image::{ImageInfo, Target};
use serde::Serialize;

use crate::partitions::TABLE_END;
use crate::units::{Bytes, FlashSize};

/// App partitions start on 64 KiB boundaries: the MMU maps flash in 64 KiB pages.
pub const APP_ALIGN: u32 = 0x1_0000;

/// One rule of the release gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// ESP-IDF's own table rules: unique names, one factory, one 8 KiB otadata, apps <= 16 MiB.
    Table,
    NoOverlaps,
    AppAlignment,
    Otadata,
    OtaSlots,
    FactoryNotOta,
    InsideFlash,
    Chip,
    /// The image runs on some revision of the chip.
    ChipRevision,
    /// The app runs on some revision of the chip's eFuse block.
    EfuseBlockRevision,
    /// Flash-mapped segments sit on their 64 KiB page congruence.
    SegmentMapping,
    /// Loaded segments lie in the chip's RAM, clear of the bootloader's.
    LoadAddress,
    Headroom,
    /// The image's embedded version is the one being released.
    Version,
    /// The release is above what is staged.
    Newer,
    /// The release's secure_version is not below what is staged.
    SecureVersion,
    /// The versioned image name is not taken by other bytes.
    ImageName,
    /// The signing key is one the firmware trusts.
    TrustedKey,
}

impl Rule {
    /// The rule's short name, as `--json` spells it.
    pub fn id(self) -> &'static str {
        match self {
            Rule::Table => "table",
            Rule::NoOverlaps => "no-overlaps",
            Rule::AppAlignment => "app-alignment",
            Rule::Otadata => "otadata",
            Rule::OtaSlots => "ota-slots",
            Rule::FactoryNotOta => "factory-not-ota",
            Rule::InsideFlash => "inside-flash",
            Rule::Chip => "chip",
            Rule::ChipRevision => "chip-revision",
            Rule::EfuseBlockRevision => "efuse-block-revision",
            Rule::SegmentMapping => "segment-mapping",
            Rule::LoadAddress => "load-address",
            Rule::Headroom => "headroom",
            Rule::Version => "version",
            Rule::Newer => "newer",
            Rule::SecureVersion => "secure-version",
            Rule::ImageName => "image-name",
            Rule::TrustedKey => "trusted-key",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    /// The rule could not be judged, for the reason in the detail.
    Skip,
}

/// A rule's verdict with its reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub rule: Rule,
    pub status: Status,
    pub detail: String,
}

impl Finding {
    pub fn pass(rule: Rule, detail: impl Into<String>) -> Finding {
        Finding {
            rule,
            status: Status::Pass,
            detail: detail.into(),
        }
    }

    pub fn fail(rule: Rule, detail: impl Into<String>) -> Finding {
        Finding {
            rule,
            status: Status::Fail,
            detail: detail.into(),
        }
    }

    pub fn skip(rule: Rule, detail: impl Into<String>) -> Finding {
        Finding {
            rule,
            status: Status::Skip,
            detail: detail.into(),
        }
    }

    /// A rule that fails once per offending item, or passes with `ok` when none does.
    fn from_problems(rule: Rule, problems: Vec<String>, ok: impl FnOnce() -> String) -> Finding {
        if problems.is_empty() {
            Finding::pass(rule, ok())
        } else {
            Finding::fail(rule, problems.join("; "))
        }
    }
}

/// The rules ESP-IDF's image loader applies to the image beyond its format, as judged by
/// ota-core's reader: a failure here is an image every device would refuse to boot.
/// (That it fits its partition is the headroom rule's, with room to spare.)
pub fn image_loader(info: &ImageInfo) -> Vec<Finding> {
    let faults = info.loader_faults(&Target::default());
    let judged = |rule: Rule, ok: String| {
        let problems = faults
            .iter()
            .filter(|fault| fault.kind.rule() == rule.id())
            .map(ToString::to_string)
            .collect();
        Finding::from_problems(rule, problems, || ok)
    };
    let chip = info.header.chip;
    let revision = judged(
        Rule::ChipRevision,
        format!("runs on chip revisions {}", info.header.chip_revisions()),
    );
    let efuse = judged(
        Rule::EfuseBlockRevision,
        format!(
            "runs on eFuse block revisions {}",
            info.descriptor.efuse_block_revisions()
        ),
    );
    if MemoryMap::of(chip).is_none() {
        let unknown = format!("clockrel does not know the memory map of the {chip}");
        return vec![
            revision,
            efuse,
            Finding::skip(Rule::SegmentMapping, unknown.clone()),
            Finding::skip(Rule::LoadAddress, unknown),
        ];
    }
    vec![
        revision,
        efuse,
        judged(
            Rule::SegmentMapping,
            "every flash-mapped segment sits at a file offset congruent to its address modulo 64 KiB".to_owned(),
        ),
        judged(
            Rule::LoadAddress,
            "every loaded segment lies in the chip's RAM, clear of the bootloader's".to_owned(),
        ),
    ]
}

/// Spare room an OTA slot must keep above the image, in percent of the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Headroom(pub u32);

impl Default for Headroom {
    fn default() -> Self {
        Headroom(20)
    }
}

impl Headroom {
    /// The smallest slot that holds `image` with this headroom, rounded up.
    pub fn required_slot(self, image: u64) -> u64 {
        (image * (100 + u64::from(self.0))).div_ceil(100)
    }
}

impl fmt::Display for Headroom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} %", self.0)
    }
}

impl FromStr for Headroom {
    type Err = String;

    /// Accepts `20` and `20%`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits = s.trim().trim_end_matches('%').trim();
        match digits.parse::<u32>() {
            Ok(pct) if pct <= 1000 => Ok(Headroom(pct)),
            _ => Err(format!(
                "`{s}` is not a headroom: expected a percentage from 0 to 1000, such as 20"
            )),
        }
    }
}

/// How full one OTA slot would be with the image in it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlotUsage {
    pub name: String,
    pub offset: u32,
    pub size: Bytes,
    pub used: Bytes,
    pub free: Bytes,
    pub used_percent: f64,
    /// The slot size the headroom asks for.
    pub required: Bytes,
    pub fits: bool,
}

/// The OTA slots (app partitions of subtype ota_N), in slot order.
pub fn ota_slots(partitions: &[Partition]) -> Vec<&Partition> {
    let mut slots: Vec<_> = partitions
        .iter()
        .filter(|p| ota_index(p).is_some())
        .collect();
    slots.sort_by_key(|p| ota_index(p));
    slots
}

fn ota_index(partition: &Partition) -> Option<u8> {
    match partition.subtype() {
        SubType::App(app) if partition.ty() == Type::App => {
            let id = app as u8;
            (0x10..=0x1F).contains(&id).then(|| id - 0x10)
        }
        _ => None,
    }
}

fn is_factory(partition: &Partition) -> bool {
    partition.ty() == Type::App && partition.subtype() == SubType::App(AppType::Factory)
}

fn end(partition: &Partition) -> u64 {
    u64::from(partition.offset()) + u64::from(partition.size())
}

/// The rules about the table alone, in report order. Without a flash size the
/// inside-flash rule is skipped.
pub fn check_table(partitions: &[Partition], flash: Option<FlashSize>) -> Vec<Finding> {
    vec![
        Finding::pass(
            Rule::Table,
            format!(
                "{} partitions, accepted by ESP-IDF's rules",
                partitions.len()
            ),
        ),
        no_overlaps(partitions),
        app_alignment(partitions),
        otadata(partitions),
        ota_slot_pair(partitions),
        factory_not_ota(partitions),
        match flash {
            Some(flash) => inside_flash(partitions, flash),
            None => Finding::skip(
                Rule::InsideFlash,
                "flash size unknown: give --flash-size or set flash.size in clockrel.toml",
            ),
        },
    ]
}

fn no_overlaps(partitions: &[Partition]) -> Finding {
    let mut problems = Vec::new();
    for p in partitions.iter().filter(|p| p.offset() < TABLE_END) {
        problems.push(format!(
            "{} starts at {:#x}, inside the bootloader and partition table (below {TABLE_END:#x})",
            p.name(),
            p.offset()
        ));
    }
    for (i, a) in partitions.iter().enumerate() {
        for b in &partitions[i + 1..] {
            if u64::from(a.offset()) < end(b) && u64::from(b.offset()) < end(a) {
                problems.push(format!(
                    "{} ({:#x}..{:#x}) overlaps {} ({:#x}..{:#x})",
                    a.name(),
                    a.offset(),
                    end(a),
                    b.name(),
                    b.offset(),
                    end(b)
                ));
            }
        }
    }
    Finding::from_problems(Rule::NoOverlaps, problems, || {
        format!(
            "{} partitions, none overlapping, all above {TABLE_END:#x}",
            partitions.len()
        )
    })
}

fn app_alignment(partitions: &[Partition]) -> Finding {
    let apps = partitions.iter().filter(|p| p.ty() == Type::App);
    let problems = apps
        .clone()
        .filter(|p| p.offset() % APP_ALIGN != 0)
        .map(|p| {
            format!(
                "{} starts at {:#x}, not a multiple of 64 KiB ({APP_ALIGN:#x})",
                p.name(),
                p.offset()
            )
        })
        .collect();
    Finding::from_problems(Rule::AppAlignment, problems, || {
        format!("{} app partitions, all at 64 KiB boundaries", apps.count())
    })
}

fn otadata(partitions: &[Partition]) -> Finding {
    let slots = ota_slots(partitions);
    let otadata = partitions
        .iter()
        .find(|p| p.ty() == Type::Data && p.subtype() == SubType::Data(DataType::Ota));
    match (slots.len(), otadata) {
        (0, _) => Finding::pass(Rule::Otadata, "no OTA slots, so no otadata is needed"),
        (n, Some(data)) => Finding::pass(
            Rule::Otadata,
            format!(
                "{} at {:#x} selects among {n} OTA slots",
                data.name(),
                data.offset()
            ),
        ),
        (n, None) => Finding::fail(
            Rule::Otadata,
            format!(
                "{n} OTA slots but no otadata partition (data, ota): the bootloader could never switch slots"
            ),
        ),
    }
}

fn ota_slot_pair(partitions: &[Partition]) -> Finding {
    let slots = ota_slots(partitions);
    let find = |index| slots.iter().find(|p| ota_index(p) == Some(index));
    match (find(0), find(1)) {
        (Some(a), Some(b)) if a.size() == b.size() => Finding::pass(
            Rule::OtaSlots,
            format!(
                "{} and {} are both {:#x} ({})",
                a.name(),
                b.name(),
                a.size(),
                Bytes(a.size().into())
            ),
        ),
        (Some(a), Some(b)) => Finding::fail(
            Rule::OtaSlots,
            format!(
                "{} is {:#x} ({}) but {} is {:#x} ({}): an image that fits one may not fit the other",
                a.name(),
                a.size(),
                Bytes(a.size().into()),
                b.name(),
                b.size(),
                Bytes(b.size().into())
            ),
        ),
        (a, b) => {
            let missing: Vec<_> = [("ota_0", a), ("ota_1", b)]
                .into_iter()
                .filter(|(_, p)| p.is_none())
                .map(|(name, _)| name)
                .collect();
            Finding::fail(
                Rule::OtaSlots,
                format!(
                    "no {} slot: over-the-air updates need two app slots, ota_0 and ota_1",
                    missing.join(" or ")
                ),
            )
        }
    }
}

fn factory_not_ota(partitions: &[Partition]) -> Finding {
    let mut problems = Vec::new();
    for p in partitions {
        let name = p.name();
        if is_factory(p) && name.starts_with("ota") {
            problems.push(format!(
                "{name} has subtype factory: OTA would overwrite the factory image instead of a slot"
            ));
        }
        if name == "factory" && ota_index(p).is_some() {
            problems.push(format!(
                "partition named factory has subtype {}: updates would overwrite the factory image",
                p.subtype()
            ));
        }
    }
    Finding::from_problems(Rule::FactoryNotOta, problems, || {
        match partitions.iter().find(|p| is_factory(p)) {
            Some(f) => format!(
                "{} at {:#x} is kept out of the OTA slots",
                f.name(),
                f.offset()
            ),
            None => "no factory partition".to_owned(),
        }
    })
}

fn inside_flash(partitions: &[Partition], flash: FlashSize) -> Finding {
    let limit = u64::from(flash.bytes());
    let problems = partitions
        .iter()
        .filter(|p| end(p) > limit)
        .map(|p| {
            format!(
                "{} ends at {:#x}, past the {flash} flash ({limit:#x})",
                p.name(),
                end(p)
            )
        })
        .collect();
    Finding::from_problems(Rule::InsideFlash, problems, || {
        let last = partitions.iter().map(end).max().unwrap_or(0);
        format!("the last partition ends at {last:#x}, inside the {flash} flash ({limit:#x})")
    })
}

/// How each OTA slot would hold an image of `image_len` bytes, and the headroom verdict.
pub fn headroom(
    partitions: &[Partition],
    image_len: u64,
    headroom: Headroom,
) -> (Vec<SlotUsage>, Finding) {
    let required = headroom.required_slot(image_len);
    let usage: Vec<SlotUsage> = ota_slots(partitions)
        .into_iter()
        .map(|slot| {
            let size = u64::from(slot.size());
            SlotUsage {
                name: slot.name(),
                offset: slot.offset(),
                size: Bytes(size),
                used: Bytes(image_len),
                free: Bytes(size.saturating_sub(image_len)),
                used_percent: image_len as f64 * 100.0 / size.max(1) as f64,
                required: Bytes(required),
                fits: size >= required,
            }
        })
        .collect();
    if usage.is_empty() {
        return (
            usage,
            Finding::skip(Rule::Headroom, "no OTA slots to put the image in"),
        );
    }
    let problems = usage
        .iter()
        .filter(|slot| !slot.fits)
        .map(|slot| {
            format!(
                "{} is {:#x} ({}) but a {} image with {headroom} headroom needs {:#x} ({})",
                slot.name,
                slot.size.0,
                slot.size,
                Bytes(image_len),
                required,
                Bytes(required)
            )
        })
        .collect();
    let finding = Finding::from_problems(Rule::Headroom, problems, || {
        let smallest = usage.iter().map(|s| s.size.0).min().unwrap_or(0);
        format!(
            "a {} image needs {} with {headroom} headroom; the smallest slot is {}",
            Bytes(image_len),
            Bytes(required),
            Bytes(smallest)
        )
    });
    (usage, finding)
}

#[cfg(test)]
mod tests {
    use super::*;
    use esp_idf_part::Flags;

    fn part(name: &str, ty: Type, subtype: SubType, offset: u32, size: u32) -> Partition {
        Partition::new(name, ty, subtype, offset, size, Flags::empty())
    }

    fn app(name: &str, subtype: AppType, offset: u32, size: u32) -> Partition {
        part(name, Type::App, SubType::App(subtype), offset, size)
    }

    fn data(name: &str, subtype: DataType, offset: u32, size: u32) -> Partition {
        part(name, Type::Data, SubType::Data(subtype), offset, size)
    }

    /// The word clock's layout: 8 MB, factory + two 3 MiB slots.
    fn wordclock() -> Vec<Partition> {
        vec![
            data("nvs", DataType::Nvs, 0x9000, 0x4000),
            data("otadata", DataType::Ota, 0xd000, 0x2000),
            data("phy_init", DataType::Phy, 0xf000, 0x1000),
            app("factory", AppType::Factory, 0x10000, 0x100000),
            app("ota_0", AppType::Ota_0, 0x110000, 0x300000),
            app("ota_1", AppType::Ota_1, 0x410000, 0x300000),
        ]
    }

    fn mb(n: u32) -> FlashSize {
        FlashSize::from_bytes(n << 20).unwrap()
    }

    #[test]
    fn the_word_clock_layout_passes_every_rule() {
        let findings = check_table(&wordclock(), Some(mb(8)));
        for f in &findings {
            assert_eq!(f.status, Status::Pass, "{f:?}");
        }
        assert_eq!(findings.len(), 7);
    }

    #[test]
    fn a_table_past_the_end_of_flash_names_the_partition_and_numbers() {
        let f = inside_flash(&wordclock(), mb(4));
        assert_eq!(f.status, Status::Fail);
        assert_eq!(
            f.detail,
            "ota_0 ends at 0x410000, past the 4MB flash (0x400000); \
             ota_1 ends at 0x710000, past the 4MB flash (0x400000)"
        );
    }

    #[test]
    fn missing_otadata_fails() {
        let mut table = wordclock();
        table.retain(|p| p.name() != "otadata");
        let f = otadata(&table);
        assert_eq!(f.status, Status::Fail);
        assert!(f.detail.contains("2 OTA slots"), "{}", f.detail);
    }

    #[test]
    fn no_slots_needs_no_otadata_but_fails_the_slot_rule() {
        let table = vec![
            data("nvs", DataType::Nvs, 0x9000, 0x6000),
            app("factory", AppType::Factory, 0x10000, 0x100000),
        ];
        assert_eq!(otadata(&table).status, Status::Pass);
        let slots = ota_slot_pair(&table);
        assert_eq!(slots.status, Status::Fail);
        assert!(
            slots.detail.contains("no ota_0 or ota_1 slot"),
            "{}",
            slots.detail
        );
    }

    #[test]
    fn unequal_or_missing_slots_fail() {
        let mut table = wordclock();
        table[5] = app("ota_1", AppType::Ota_1, 0x410000, 0x200000);
        let f = ota_slot_pair(&table);
        assert_eq!(f.status, Status::Fail);
        assert!(
            f.detail.contains("ota_0 is 0x300000") && f.detail.contains("ota_1 is 0x200000"),
            "{}",
            f.detail
        );
        table.pop();
        assert!(ota_slot_pair(&table).detail.contains("no ota_1 slot"));
    }

    #[test]
    fn a_factory_used_as_an_ota_target_fails() {
        let mut table = wordclock();
        table[3] = app("factory", AppType::Ota_2, 0x10000, 0x100000);
        assert_eq!(factory_not_ota(&table).status, Status::Fail);
        let mut table = wordclock();
        table[5] = app("ota_1", AppType::Factory, 0x410000, 0x300000);
        table.remove(3);
        let f = factory_not_ota(&table);
        assert_eq!(f.status, Status::Fail);
        assert!(
            f.detail.starts_with("ota_1 has subtype factory"),
            "{}",
            f.detail
        );
    }

    #[test]
    fn overlaps_and_the_table_region_are_caught() {
        let mut table = wordclock();
        table[5] = app("ota_1", AppType::Ota_1, 0x400000, 0x300000);
        let f = no_overlaps(&table);
        assert_eq!(f.status, Status::Fail);
        assert_eq!(
            f.detail,
            "ota_0 (0x110000..0x410000) overlaps ota_1 (0x400000..0x700000)"
        );
        let mut table = wordclock();
        table[0] = data("nvs", DataType::Nvs, 0x7000, 0x6000);
        assert!(
            no_overlaps(&table)
                .detail
                .starts_with("nvs starts at 0x7000")
        );
    }

    #[test]
    fn misaligned_apps_fail() {
        let mut table = wordclock();
        table[4] = app("ota_0", AppType::Ota_0, 0x118000, 0x2f8000);
        let f = app_alignment(&table);
        assert_eq!(f.status, Status::Fail);
        assert!(
            f.detail.starts_with("ota_0 starts at 0x118000"),
            "{}",
            f.detail
        );
    }

    #[test]
    fn headroom_is_twenty_percent_by_default_and_rounds_up() {
        assert_eq!(Headroom::default().required_slot(1000), 1200);
        assert_eq!(Headroom::default().required_slot(1001), 1202);
        assert_eq!("25%".parse(), Ok(Headroom(25)));
        assert!("-5".parse::<Headroom>().is_err());
    }

    #[test]
    fn an_image_that_fits_but_not_with_headroom_fails() {
        // 3 MiB slots; an image of 2.6 MiB fits but 2.6 * 1.2 = 3.12 MiB does not.
        let image = 2_726_298;
        let (usage, f) = headroom(&wordclock(), image, Headroom::default());
        assert_eq!(f.status, Status::Fail);
        assert!(usage.iter().all(|s| !s.fits && s.free.0 > 0));
        assert!(f.detail.contains("ota_0 is 0x300000"), "{}", f.detail);
        let (_, f) = headroom(&wordclock(), image, Headroom(10));
        assert_eq!(f.status, Status::Pass, "{}", f.detail);
        let (usage, f) = headroom(&wordclock(), 1 << 20, Headroom::default());
        assert_eq!(f.status, Status::Pass);
        assert_eq!(usage[0].free, Bytes(2 << 20));
        assert!((usage[0].used_percent - 33.33).abs() < 0.01);
    }
}
