//! A synthetic ESP32-S3 firmware ELF with a chosen version and size.

use object::elf;
use object::write::elf::{FileHeader, SectionHeader, Writer};

/// ESP32-S3 memory map: where each kind of section is placed.
const DROM_APPDESC: u32 = 0x3C00_0020;
const IROM_TEXT: u32 = 0x4200_0020;
const IRAM_TEXT: u32 = 0x4037_0000;
const DRAM_DATA: u32 = 0x3FC8_8000;

/// A firmware ELF to generate. The same description always gives the same bytes.
#[derive(Debug, Clone)]
pub struct FirmwareElf {
    pub version: String,
    pub project_name: String,
    pub secure_version: u32,
    pub idf_version: String,
    pub date: String,
    pub time: String,
    /// Bytes of code and read-only data; the app image comes out a little larger.
    pub payload_len: u32,
    /// Whose code and data the build carries: its own version's unless set, so two
    /// versions differ in every segment; set to one value, they differ by the version
    /// alone, as a release that only bumps it does.
    pub code_of: Option<String>,
}

impl FirmwareElf {
    /// A word-clock build of `version` with about 64 KiB of code.
    pub fn new(version: &str) -> FirmwareElf {
        FirmwareElf {
            version: version.to_owned(),
            project_name: "wordclock".to_owned(),
            secure_version: 0,
            idf_version: "v5.3.2".to_owned(),
            date: "Nov 29 2026".to_owned(),
            time: "12:00:00".to_owned(),
            payload_len: 64 * 1024,
            code_of: None,
        }
    }

    /// The code and data of `build` (any text), whatever the version.
    pub fn code_of(mut self, build: &str) -> FirmwareElf {
        self.code_of = Some(build.to_owned());
        self
    }

    pub fn payload_len(mut self, bytes: u32) -> FirmwareElf {
        self.payload_len = bytes;
        self
    }

    pub fn secure_version(mut self, secure_version: u32) -> FirmwareElf {
        self.secure_version = secure_version;
        self
    }

    pub fn project_name(mut self, name: &str) -> FirmwareElf {
        self.project_name = name.to_owned();
        self
    }

    /// `esp_app_desc_t` as ESP-IDF's build would place it; espflash fills in the ELF hash.
    pub fn app_descriptor(&self) -> [u8; 256] {
        let mut desc = [0u8; 256];
        desc[0..4].copy_from_slice(&0xABCD_5432u32.to_le_bytes());
        desc[4..8].copy_from_slice(&self.secure_version.to_le_bytes());
        put_str(&mut desc[16..48], &self.version);
        put_str(&mut desc[48..80], &self.project_name);
        put_str(&mut desc[80..96], &self.time);
        put_str(&mut desc[96..112], &self.date);
        put_str(&mut desc[112..144], &self.idf_version);
        desc
    }

    /// The ELF file's bytes.
    pub fn build(&self) -> Vec<u8> {
        let code_len = (self.payload_len / 2).next_multiple_of(4) as usize;
        let rodata_len = (self.payload_len as usize - code_len.min(self.payload_len as usize))
            .next_multiple_of(4);
        let mut rodata = self.app_descriptor().to_vec();
        rodata.extend(filler(self.seed() ^ 1, rodata_len));
        let sections = [
            Section::new(b".flash.appdesc", DROM_APPDESC, rodata, Kind::ReadOnly),
            Section::new(
                b".flash.text",
                IROM_TEXT,
                filler(self.seed() ^ 2, code_len),
                Kind::Code,
            ),
            Section::new(
                b".iram0.text",
                IRAM_TEXT,
                filler(self.seed() ^ 3, 2048),
                Kind::Code,
            ),
            Section::new(
                b".dram0.data",
                DRAM_DATA,
                filler(self.seed() ^ 4, 1024),
                Kind::Data,
            ),
        ];
        write_elf(&sections, IRAM_TEXT)
    }

    /// Mixes the description into the filler so that two versions differ in every
    /// segment, unless they carry the same code.
    fn seed(&self) -> u64 {
        self.code_of
            .as_deref()
            .unwrap_or(&self.version)
            .bytes()
            .chain(self.project_name.bytes())
            .fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
                (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
            })
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Code,
    ReadOnly,
    Data,
}

struct Section {
    name: &'static [u8],
    addr: u32,
    data: Vec<u8>,
    kind: Kind,
}

impl Section {
    fn new(name: &'static [u8], addr: u32, data: Vec<u8>, kind: Kind) -> Section {
        Section {
            name,
            addr,
            data,
            kind,
        }
    }
}

fn write_elf(sections: &[Section], entry: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut writer = Writer::new(object::Endianness::Little, false, &mut out);
    writer.reserve_file_header();
    let names: Vec<_> = sections
        .iter()
        .map(|section| {
            writer.reserve_section_index();
            writer.add_section_name(section.name)
        })
        .collect();
    writer.reserve_shstrtab_section_index();
    let offsets: Vec<u64> = sections
        .iter()
        .map(|section| writer.reserve(section.data.len() as u64, 4))
        .collect();
    writer
        .reserve_shstrtab()
        .expect("section names fit a string table");
    writer.reserve_section_headers();

    writer
        .write_file_header(&FileHeader {
            os_abi: elf::ELFOSABI_NONE,
            abi_version: 0,
            e_type: elf::ET_EXEC,
            e_machine: elf::EM_XTENSA,
            e_entry: u64::from(entry),
            e_flags: elf::FileFlags(0x300),
        })
        .expect("header of a 32-bit little-endian ELF");
    for section in sections {
        writer.write_align(4);
        writer.write(&section.data);
    }
    writer.write_shstrtab();
    writer.write_null_section_header();
    for ((section, name), offset) in sections.iter().zip(names).zip(offsets) {
        let flags = match section.kind {
            Kind::Code => elf::SHF_ALLOC | elf::SHF_EXECINSTR,
            Kind::ReadOnly => elf::SHF_ALLOC,
            Kind::Data => elf::SHF_ALLOC | elf::SHF_WRITE,
        };
        writer.write_section_header(&SectionHeader {
            sh_name: writer.section_name_offset(Some(name)),
            sh_type: elf::SHT_PROGBITS,
            sh_flags: flags,
            sh_addr: u64::from(section.addr),
            sh_offset: offset,
            sh_size: section.data.len() as u64,
            sh_link: 0,
            sh_info: 0,
            sh_addralign: 4,
            sh_entsize: 0,
        });
    }
    writer.write_shstrtab_section_header();
    out
}

fn put_str(field: &mut [u8], text: &str) {
    let len = text.len().min(field.len() - 1);
    field[..len].copy_from_slice(&text.as_bytes()[..len]);
}

/// Deterministic bytes that do not compress, so sizes stay honest (xorshift64).
fn filler(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}
