//! otadata against hand-derived bytes and ESP-IDF's boot and rollback rules, and against
//! arbitrary bytes and operation sequences.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed, and says where

use ota_core::otadata::{
    Boot, BootTarget, Marked, OTADATA_SIZE, OtaEntry, OtaState, Otadata, OtadataError, RawEntry,
    SECTOR_SIZE, Slot, seq_crc,
};
use proptest::prelude::*;

const OTA_0: BootTarget = BootTarget::Ota(Slot(0));
const OTA_1: BootTarget = BootTarget::Ota(Slot(1));

/// `seq` little-endian, 20 bytes of erased `seq_label`, `state`, `crc`.
fn entry_bytes(seq: [u8; 4], state: [u8; 4], crc: [u8; 4]) -> [u8; 32] {
    let mut bytes = [0xFF; 32];
    bytes[..4].copy_from_slice(&seq);
    bytes[24..28].copy_from_slice(&state);
    bytes[28..].copy_from_slice(&crc);
    bytes
}

fn sector(otadata: &Otadata, index: usize) -> Option<OtaEntry> {
    otadata.sectors()[index].entry()
}

#[test]
fn crc_matches_zlib_vectors() {
    assert_eq!(seq_crc(1), 0x4743_989A);
    assert_eq!(seq_crc(2), 0x55F6_3774);
    // zlib.crc32(b"\xff" * 4, 0xFFFFFFFF): an erased seq never passes as valid.
    assert_eq!(seq_crc(u32::MAX), 0x2144_DF1C);
}

#[test]
fn entries_encode_byte_for_byte() {
    let cases = [
        (
            OtaEntry::new(1, OtaState::New),
            entry_bytes([1, 0, 0, 0], [0; 4], [0x9A, 0x98, 0x43, 0x47]),
        ),
        (
            OtaEntry::new(2, OtaState::PendingVerify),
            entry_bytes([2, 0, 0, 0], [1, 0, 0, 0], [0x74, 0x37, 0xF6, 0x55]),
        ),
        // crc from zlib.crc32((3).to_bytes(4, "little"), 0xFFFFFFFF)
        (
            OtaEntry::new(3, OtaState::Valid),
            entry_bytes([3, 0, 0, 0], [2, 0, 0, 0], [0x11, 0x50, 0x4A, 0xED]),
        ),
        (
            OtaEntry::new(1, OtaState::Undefined),
            entry_bytes([1, 0, 0, 0], [0xFF; 4], [0x9A, 0x98, 0x43, 0x47]),
        ),
    ];
    for (entry, bytes) in cases {
        assert_eq!(entry.encode(), bytes, "{entry:?}");
        assert_eq!(OtaEntry::decode(&bytes), Some(entry));
    }
}

#[test]
fn states_keep_their_esp_idf_values() {
    let named = [
        (OtaState::New, 0),
        (OtaState::PendingVerify, 1),
        (OtaState::Valid, 2),
        (OtaState::Invalid, 3),
        (OtaState::Aborted, 4),
        (OtaState::Undefined, u32::MAX),
    ];
    for (state, value) in named {
        assert_eq!(state.to_u32(), value);
        assert_eq!(OtaState::from_u32(value), state);
    }
    assert_eq!(OtaState::from_u32(5), OtaState::Unknown(5));
    assert_eq!(u32::from(OtaState::Unknown(5)), 5);
}

#[test]
fn entries_the_bootloader_ignores_do_not_decode() {
    assert_eq!(OtaEntry::decode(&[0xFF; 32]), None, "erased");
    let mut bad_crc = OtaEntry::new(1, OtaState::Valid).encode();
    bad_crc[28] ^= 1;
    assert_eq!(OtaEntry::decode(&bad_crc), None, "bad CRC");
    let mut seq_changed = OtaEntry::new(1, OtaState::Valid).encode();
    seq_changed[0] = 2;
    assert_eq!(
        OtaEntry::decode(&seq_changed),
        None,
        "seq changed under its CRC"
    );
    let erased_seq_good_crc = OtaEntry::new(u32::MAX, OtaState::Valid).encode();
    assert_eq!(
        OtaEntry::decode(&erased_seq_good_crc),
        None,
        "seq 0xFFFFFFFF means erased"
    );
    // Refused for booting, but still an entry the app reads.
    let invalid = OtaEntry::new(4, OtaState::Invalid);
    assert_eq!(OtaEntry::decode(&invalid.encode()), Some(invalid));
}

#[test]
fn partition_must_be_two_sectors() {
    for len in [
        0,
        32,
        SECTOR_SIZE,
        OTADATA_SIZE - 1,
        OTADATA_SIZE + 1,
        3 * SECTOR_SIZE,
    ] {
        assert_eq!(
            Otadata::from_bytes(&vec![0xFF; len]),
            Err(OtadataError::Size {
                expected: 0x2000,
                actual: len
            })
        );
    }
}

#[test]
fn blank_otadata_is_all_erased_bytes() {
    let blank = Otadata::from_bytes(&[0xFF; OTADATA_SIZE]).unwrap();
    assert_eq!(blank, Otadata::blank());
    assert_eq!(blank.to_bytes(), vec![0xFF; OTADATA_SIZE]);
    assert_eq!(blank.active(), None);
}

#[test]
fn layout_puts_each_entry_at_the_start_of_its_sector() {
    let mut otadata = Otadata::blank();
    assert_eq!(otadata.set_boot(Slot(0), 2), Ok(0));
    assert_eq!(otadata.set_boot(Slot(1), 2), Ok(1));
    let bytes = otadata.to_bytes();
    assert_eq!(bytes.len(), OTADATA_SIZE);
    assert_eq!(
        bytes[..32],
        entry_bytes([1, 0, 0, 0], [0; 4], [0x9A, 0x98, 0x43, 0x47])
    );
    assert!(bytes[32..SECTOR_SIZE].iter().all(|&b| b == 0xFF));
    assert_eq!(
        bytes[SECTOR_SIZE..SECTOR_SIZE + 32],
        entry_bytes([2, 0, 0, 0], [0; 4], [0x74, 0x37, 0xF6, 0x55])
    );
    assert!(bytes[SECTOR_SIZE + 32..].iter().all(|&b| b == 0xFF));
    assert_eq!(Otadata::from_bytes(&bytes), Ok(otadata));
}

#[test]
fn full_update_cycle_commits_then_rolls_back() {
    let mut otadata = Otadata::blank();
    let boot = otadata.boot(2, true).unwrap();
    assert_eq!(
        boot,
        Boot {
            target: BootTarget::Factory,
            chosen: None,
            rewritten: [false; 2]
        }
    );

    // Factory installs ota_0.
    assert_eq!(otadata.set_boot(Slot(0), 2), Ok(0));
    assert_eq!(sector(&otadata, 0), Some(OtaEntry::new(1, OtaState::New)));
    assert_eq!(otadata.boot_partition(2, true), Ok(OTA_0));
    assert_eq!(otadata.running_state(BootTarget::Factory, 2), None);

    let boot = otadata.boot(2, true).unwrap();
    assert_eq!(
        boot,
        Boot {
            target: OTA_0,
            chosen: Some(0),
            rewritten: [true, false]
        }
    );
    assert_eq!(
        otadata.running_state(OTA_0, 2),
        Some(OtaState::PendingVerify)
    );
    assert_eq!(
        otadata.mark_valid(2),
        Ok(Marked {
            slot: Slot(0),
            sector: 0,
            rewritten: true
        })
    );
    assert_eq!(otadata.running_state(OTA_0, 2), Some(OtaState::Valid));
    assert_eq!(
        otadata.mark_valid(2),
        Ok(Marked {
            slot: Slot(0),
            sector: 0,
            rewritten: false
        }),
        "marking twice writes nothing"
    );
    let boot = otadata.boot(2, true).unwrap();
    assert_eq!(
        boot,
        Boot {
            target: OTA_0,
            chosen: Some(0),
            rewritten: [false; 2]
        }
    );
    assert!(!boot.otadata_changed());

    // ota_0 installs ota_1, which never confirms.
    assert_eq!(otadata.set_boot(Slot(1), 2), Ok(1));
    assert_eq!(sector(&otadata, 1), Some(OtaEntry::new(2, OtaState::New)));
    let boot = otadata.boot(2, true).unwrap();
    assert_eq!(
        boot,
        Boot {
            target: OTA_1,
            chosen: Some(1),
            rewritten: [false, true]
        }
    );
    assert_eq!(
        otadata.running_state(OTA_1, 2),
        Some(OtaState::PendingVerify)
    );

    let boot = otadata.boot(2, true).unwrap();
    assert_eq!(
        boot,
        Boot {
            target: OTA_0,
            chosen: Some(0),
            rewritten: [false, true]
        }
    );
    assert_eq!(
        sector(&otadata, 1),
        Some(OtaEntry::new(2, OtaState::Aborted))
    );
    assert_eq!(sector(&otadata, 0), Some(OtaEntry::new(1, OtaState::Valid)));
    assert_eq!(otadata.last_invalid(2), Some(Slot(1)));

    // It stays rolled back.
    let boot = otadata.boot(2, true).unwrap();
    assert_eq!(
        boot,
        Boot {
            target: OTA_0,
            chosen: Some(0),
            rewritten: [false; 2]
        }
    );
}

#[test]
fn marking_invalid_rolls_back_at_the_next_boot() {
    let mut otadata = Otadata::blank();
    otadata.set_boot(Slot(0), 2).unwrap();
    otadata.boot(2, false).unwrap();
    otadata.mark_valid(2).unwrap();
    otadata.set_boot(Slot(1), 2).unwrap();
    assert_eq!(otadata.boot(2, false).unwrap().target, OTA_1);

    assert_eq!(
        otadata.mark_invalid(2, false),
        Ok(Marked {
            slot: Slot(1),
            sector: 1,
            rewritten: true
        })
    );
    assert_eq!(
        sector(&otadata, 1),
        Some(OtaEntry::new(2, OtaState::Invalid))
    );
    let boot = otadata.boot(2, false).unwrap();
    assert_eq!(
        boot,
        Boot {
            target: OTA_0,
            chosen: Some(0),
            rewritten: [false; 2]
        }
    );
}

#[test]
fn marking_needs_an_active_entry_and_invalid_needs_somewhere_to_go() {
    let mut otadata = Otadata::blank();
    assert_eq!(otadata.mark_valid(2), Err(OtadataError::NoActiveEntry));
    assert_eq!(
        otadata.mark_invalid(2, true),
        Err(OtadataError::NoActiveEntry)
    );

    // First update with no factory and nothing in the other sector: nowhere to roll back.
    otadata.set_boot(Slot(1), 2).unwrap();
    otadata.boot(2, false).unwrap();
    let before = otadata.clone();
    assert_eq!(
        otadata.mark_invalid(2, false),
        Err(OtadataError::RollbackImpossible)
    );
    assert_eq!(otadata, before, "a refused mark writes nothing");
    // With a factory app, it can.
    assert!(otadata.mark_invalid(2, true).is_ok());
    assert_eq!(otadata.boot(2, true).unwrap().target, BootTarget::Factory);
}

#[test]
fn corrupted_crc_in_newest_sector_falls_back_to_the_other() {
    let mut otadata = Otadata::blank();
    otadata.set_boot(Slot(0), 2).unwrap();
    otadata.boot(2, false).unwrap();
    otadata.mark_valid(2).unwrap();
    otadata.set_boot(Slot(1), 2).unwrap();
    otadata.boot(2, false).unwrap();
    otadata.mark_valid(2).unwrap();

    let mut bytes = otadata.to_bytes();
    bytes[SECTOR_SIZE + 28] ^= 0x80; // sector 1 (seq 2, the newest): CRC byte
    let mut corrupted = Otadata::from_bytes(&bytes).unwrap();
    assert_eq!(corrupted.active(), Some(0));
    let boot = corrupted.boot(2, false).unwrap();
    assert_eq!(
        boot,
        Boot {
            target: OTA_0,
            chosen: Some(0),
            rewritten: [false; 2]
        }
    );
    // The broken sector is left as it was: the bootloader only rewrites what it changes.
    assert_eq!(corrupted.to_bytes(), bytes);
}

#[test]
fn pending_entry_with_bad_crc_is_aborted_and_written_back_with_its_crc() {
    let mut pending = RawEntry::from(OtaEntry::new(2, OtaState::PendingVerify));
    pending.crc ^= 1;
    let valid = RawEntry::from(OtaEntry::new(1, OtaState::Valid));
    let mut otadata = Otadata::from_sectors([valid, pending]);
    let boot = otadata.boot(2, false).unwrap();
    assert_eq!(
        boot,
        Boot {
            target: OTA_0,
            chosen: Some(0),
            rewritten: [false, true]
        }
    );
    assert_eq!(
        otadata.sectors()[1],
        RawEntry {
            state: OtaState::Aborted,
            ..pending
        }
    );
}

#[test]
fn sequence_numbers_alternate_sectors_and_slots() {
    let mut otadata = Otadata::blank();
    for update in 0..7u32 {
        let slot = Slot(u8::try_from(update % 2).unwrap());
        let written = otadata.set_boot(slot, 2).unwrap();
        assert_eq!(
            written,
            usize::try_from(update % 2).unwrap(),
            "update {update}"
        );
        assert_eq!(
            sector(&otadata, written),
            Some(OtaEntry::new(update + 1, OtaState::New))
        );
        let boot = otadata.boot(2, false).unwrap();
        assert_eq!(boot.target, BootTarget::Ota(slot), "update {update}");
        assert_eq!(boot.chosen, Some(written));
        otadata.mark_valid(2).unwrap();
    }

    // Three slots: seq walks up so that (seq - 1) % 3 names the slot.
    let mut otadata = Otadata::blank();
    let plan = [
        (2, 0, 3),
        (0, 1, 4),
        (1, 0, 5),
        (0, 1, 7),
        (2, 0, 9),
        (2, 0, 9),
    ];
    for (slot, sector_written, seq) in plan {
        assert_eq!(
            otadata.set_boot(Slot(slot), 3),
            Ok(sector_written),
            "to ota_{slot}"
        );
        assert_eq!(
            sector(&otadata, sector_written),
            Some(OtaEntry::new(seq, OtaState::New))
        );
        assert_eq!(
            otadata.boot(3, true).unwrap().target,
            BootTarget::Ota(Slot(slot))
        );
        otadata.mark_valid(3).unwrap();
    }
}

#[test]
fn blank_otadata_boots_factory_else_ota_0_and_records_it() {
    let mut with_factory = Otadata::blank();
    let boot = with_factory.boot(2, true).unwrap();
    assert_eq!(
        boot,
        Boot {
            target: BootTarget::Factory,
            chosen: None,
            rewritten: [false; 2]
        }
    );
    assert_eq!(with_factory, Otadata::blank());

    // set_actual_ota_seq: without a factory app the bootloader records ota_0 as VALID.
    let mut without = Otadata::blank();
    let boot = without.boot(2, false).unwrap();
    assert_eq!(
        boot,
        Boot {
            target: OTA_0,
            chosen: None,
            rewritten: [true, false]
        }
    );
    assert_eq!(sector(&without, 0), Some(OtaEntry::new(1, OtaState::Valid)));
    assert_eq!(sector(&without, 1), None);
    assert_eq!(without.boot(2, false).unwrap().chosen, Some(0));
}

#[test]
fn both_entries_refused_falls_back_without_recording() {
    let aborted = |seq| RawEntry::from(OtaEntry::new(seq, OtaState::Aborted));
    let mut otadata = Otadata::from_sectors([aborted(1), aborted(2)]);
    let before = otadata.clone();
    let boot = otadata.boot(2, false).unwrap();
    assert_eq!(
        boot,
        Boot {
            target: OTA_0,
            chosen: None,
            rewritten: [false; 2]
        }
    );
    assert_eq!(otadata, before);
    assert_eq!(otadata.boot(2, true).unwrap().target, BootTarget::Factory);
}

#[test]
fn set_boot_to_the_active_slot_rewrites_in_place() {
    let mut otadata = Otadata::blank();
    otadata.set_boot(Slot(1), 2).unwrap();
    otadata.boot(2, false).unwrap();
    otadata.mark_valid(2).unwrap();
    assert_eq!(otadata.set_boot(Slot(1), 2), Ok(0));
    assert_eq!(sector(&otadata, 0), Some(OtaEntry::new(2, OtaState::New)));
    assert_eq!(sector(&otadata, 1), None);
}

#[test]
fn set_boot_refuses_what_the_table_lacks() {
    let mut otadata = Otadata::blank();
    assert_eq!(
        otadata.set_boot(Slot(2), 2),
        Err(OtadataError::NoSuchSlot {
            slot: Slot(2),
            slot_count: 2
        })
    );
    assert_eq!(
        otadata.set_boot(Slot(0), 0),
        Err(OtadataError::NoSuchSlot {
            slot: Slot(0),
            slot_count: 0
        })
    );
    assert_eq!(
        otadata.set_boot(Slot(0), 17),
        Err(OtadataError::TooManySlots { slot_count: 17 })
    );
    assert_eq!(otadata.boot(0, false), Err(OtadataError::NoApp));
    assert_eq!(otadata.boot(0, true).unwrap().target, BootTarget::Factory);
    assert_eq!(otadata, Otadata::blank());
}

#[test]
fn sequence_exhaustion_is_an_error_not_an_erased_entry() {
    // (0xFFFFFFFE - 1) % 2 == 1; the next seq for ota_0 would be 0xFFFFFFFF.
    let top = RawEntry::from(OtaEntry::new(u32::MAX - 1, OtaState::Valid));
    let mut otadata = Otadata::from_sectors([top, RawEntry::ERASED]);
    assert_eq!(otadata.boot(2, false).unwrap().target, OTA_1);
    assert_eq!(
        otadata.set_boot(Slot(0), 2),
        Err(OtadataError::SeqExhausted {
            current: u32::MAX - 1,
            slot: Slot(0)
        })
    );
}

#[test]
fn starting_an_update_erases_the_entry_of_the_slot_being_overwritten() {
    let mut otadata = Otadata::blank();
    otadata.set_boot(Slot(0), 2).unwrap();
    otadata.boot(2, false).unwrap();
    otadata.mark_valid(2).unwrap();
    otadata.set_boot(Slot(1), 2).unwrap();
    let running = otadata.boot(2, false).unwrap().target;
    otadata.mark_valid(2).unwrap();

    // Running ota_1, about to overwrite ota_0: its entry (sector 0) goes.
    assert_eq!(otadata.invalidate_inactive(running, 2), Some(0));
    assert_eq!(otadata.sectors()[0], RawEntry::ERASED);
    assert_eq!(
        otadata.invalidate_inactive(running, 2),
        None,
        "already erased"
    );
    // An interrupted download now cannot be rolled back onto.
    assert_eq!(
        otadata.mark_invalid(2, false),
        Err(OtadataError::RollbackImpossible)
    );
}

#[derive(Debug, Clone)]
enum Op {
    SetBoot(u8),
    Boot,
    MarkValid,
    MarkInvalid,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0..16u8).prop_map(Op::SetBoot),
        3 => Just(Op::Boot),
        1 => Just(Op::MarkValid),
        1 => Just(Op::MarkInvalid),
    ]
}

proptest! {
    #[test]
    fn entry_decode_never_panics(bytes in any::<[u8; 32]>()) {
        let raw = RawEntry::from_bytes(&bytes);
        prop_assert_eq!(raw.to_bytes(), bytes);
        if let Some(entry) = OtaEntry::decode(&bytes) {
            prop_assert_eq!(&entry.encode()[..4], &bytes[..4]);
            prop_assert_eq!(&entry.encode()[24..], &bytes[24..]);
        }
    }

    #[test]
    fn from_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..0x2100)) {
        let result = Otadata::from_bytes(&bytes);
        prop_assert_eq!(result.is_ok(), bytes.len() == OTADATA_SIZE);
    }

    /// Any otadata, any partition table, any operation: typed answers, no panic, and what
    /// is written reads back.
    #[test]
    fn arbitrary_otadata_never_panics(
        first in any::<[u8; 32]>(),
        second in any::<[u8; 32]>(),
        tail in any::<u8>(),
        slot_count in any::<u8>(),
        slot in any::<u8>(),
        factory in any::<bool>(),
        ops in proptest::collection::vec(0..6u8, 0..8),
    ) {
        let mut bytes = vec![tail; OTADATA_SIZE];
        bytes[..32].copy_from_slice(&first);
        bytes[SECTOR_SIZE..SECTOR_SIZE + 32].copy_from_slice(&second);
        let mut otadata = Otadata::from_bytes(&bytes).unwrap();
        for op in ops {
            let running = BootTarget::Ota(Slot(slot));
            match op {
                0 => { let _ = otadata.boot(slot_count, factory); }
                1 => { let _ = otadata.set_boot(Slot(slot), slot_count); }
                2 => { let _ = otadata.mark_valid(slot_count); }
                3 => { let _ = otadata.mark_invalid(slot_count, factory); }
                4 => { let _ = otadata.invalidate_inactive(running, slot_count); }
                _ => {
                    let _ = otadata.boot_partition(slot_count, factory);
                    let _ = otadata.running_state(running, slot_count);
                    let _ = otadata.last_invalid(slot_count);
                }
            }
            prop_assert_eq!(Otadata::from_bytes(&otadata.to_bytes()), Ok(otadata.clone()));
        }
    }

    /// Whatever the app and the bootloader do, a boot that an entry chose starts a slot
    /// whose last mark was neither invalid nor aborted, and a boot no entry chose is the
    /// factory app, else ota_0. The last mark of each slot is tracked here, independently.
    #[test]
    fn boots_never_start_a_rejected_slot(
        slot_count in 1..=4u8,
        factory in any::<bool>(),
        ops in proptest::collection::vec(op(), 0..60),
    ) {
        let mut otadata = Otadata::blank();
        let mut marks: [Option<OtaState>; 16] = [None; 16];
        for op in ops {
            match op {
                Op::SetBoot(slot) => {
                    let slot = slot % slot_count;
                    prop_assert!(otadata.set_boot(Slot(slot), slot_count).is_ok());
                    marks[usize::from(slot)] = Some(OtaState::New);
                    prop_assert_eq!(
                        otadata.boot_partition(slot_count, factory),
                        Ok(BootTarget::Ota(Slot(slot)))
                    );
                }
                Op::Boot => {
                    let boot = otadata.boot(slot_count, factory).unwrap();
                    for mark in &mut marks {
                        if *mark == Some(OtaState::PendingVerify) {
                            *mark = Some(OtaState::Aborted);
                        }
                    }
                    match (boot.chosen, boot.target) {
                        (Some(_), BootTarget::Ota(slot)) => {
                            prop_assert!(slot.0 < slot_count);
                            let mark = &mut marks[usize::from(slot.0)];
                            prop_assert!(
                                !matches!(mark, Some(OtaState::Invalid | OtaState::Aborted)),
                                "booted {} whose last mark is {:?}", slot, mark
                            );
                            if *mark == Some(OtaState::New) {
                                *mark = Some(OtaState::PendingVerify);
                            }
                        }
                        (None, target) => {
                            prop_assert_eq!(target, if factory { BootTarget::Factory } else { OTA_0 });
                        }
                        (Some(_), BootTarget::Factory) => prop_assert!(false, "an entry chose factory"),
                    }
                }
                Op::MarkValid => match otadata.mark_valid(slot_count) {
                    Ok(marked) => marks[usize::from(marked.slot.0)] = Some(OtaState::Valid),
                    Err(e) => prop_assert_eq!(e, OtadataError::NoActiveEntry),
                },
                Op::MarkInvalid => match otadata.mark_invalid(slot_count, factory) {
                    Ok(marked) => marks[usize::from(marked.slot.0)] = Some(OtaState::Invalid),
                    Err(e) => prop_assert!(matches!(
                        e,
                        OtadataError::NoActiveEntry | OtadataError::RollbackImpossible
                    )),
                },
            }
        }
    }
}
