//! Just enough ELF to refuse an agent the kernel could not run as /init:
//! one that is not a 64-bit little-endian x86-64 executable, or one that
//! needs a dynamic loader (the initramfs has none).

use shoal_proto::codec::{DecodeError, Reader};

const PT_INTERP: u32 = 3;
const EM_X86_64: u16 = 62;

/// What is wrong with the agent binary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ElfError {
    /// not an ELF file, or a truncated one
    #[error("not an ELF executable ({0})")]
    NotElf(DecodeError),
    /// built for another machine or word size
    #[error("not a 64-bit x86-64 executable")]
    WrongMachine,
    /// has a PT_INTERP program header
    #[error("dynamically linked (build it with -C target-feature=+crt-static)")]
    Dynamic,
}

/// Checks that `bin` is a static x86-64 executable.
pub fn check_static(bin: &[u8]) -> Result<(), ElfError> {
    let mut r = Reader::new(bin);
    let ident = r.array::<16>("ELF ident").map_err(ElfError::NotElf)?;
    if ident[..4] != *b"\x7fELF" {
        return Err(ElfError::NotElf(DecodeError::BadMagic("ELF")));
    }
    // Class 2: 64-bit; data 1: little-endian.
    if ident[4] != 2 || ident[5] != 1 {
        return Err(ElfError::WrongMachine);
    }
    let _e_type = r.u16("e_type").map_err(ElfError::NotElf)?;
    if r.u16("e_machine").map_err(ElfError::NotElf)? != EM_X86_64 {
        return Err(ElfError::WrongMachine);
    }
    let _version = r.u32("e_version").map_err(ElfError::NotElf)?;
    let _entry = r.u64("e_entry").map_err(ElfError::NotElf)?;
    let phoff = r.u64("e_phoff").map_err(ElfError::NotElf)?;
    // e_shoff, e_flags, e_ehsize.
    r.take(0x36 - 0x28, "ELF header").map_err(ElfError::NotElf)?;
    let phentsize = r.u16("e_phentsize").map_err(ElfError::NotElf)? as usize;
    let phnum = r.u16("e_phnum").map_err(ElfError::NotElf)? as usize;
    if phentsize < 4 {
        return Err(ElfError::NotElf(DecodeError::Invalid("e_phentsize")));
    }
    let table = usize::try_from(phoff)
        .ok()
        .and_then(|off| bin.get(off..))
        .ok_or(ElfError::NotElf(DecodeError::Truncated("program headers")))?;
    let mut ph = Reader::new(table);
    for _ in 0..phnum {
        let entry = ph.take(phentsize, "program header").map_err(ElfError::NotElf)?;
        if Reader::new(entry).u32("p_type").map_err(ElfError::NotElf)? == PT_INTERP {
            return Err(ElfError::Dynamic);
        }
    }
    Ok(())
}

#[cfg(test)]
/// A minimal ELF64 x86-64 header with the given program header types.
pub(crate) fn test_elf(types: &[u32]) -> Vec<u8> {
    let mut b = vec![0u8; 64];
    b[..4].copy_from_slice(b"\x7fELF");
    b[4] = 2;
    b[5] = 1;
    b[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
    b[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
    b[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
    b[0x38..0x3a].copy_from_slice(&(types.len() as u16).to_le_bytes());
    for t in types {
        let mut ph = vec![0u8; 56];
        ph[..4].copy_from_slice(&t.to_le_bytes());
        b.extend(ph);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elf(types: &[u32]) -> Vec<u8> {
        test_elf(types)
    }

    #[test]
    fn static_and_dynamic_executables_are_told_apart() {
        assert_eq!(check_static(&elf(&[6, 1, 1])), Ok(()));
        assert_eq!(check_static(&elf(&[6, PT_INTERP, 1])), Err(ElfError::Dynamic));
    }

    #[test]
    fn the_running_test_binary_is_dynamic() {
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(check_static(&me), Err(ElfError::Dynamic));
    }

    #[test]
    fn other_files_are_refused_without_panicking() {
        assert!(matches!(check_static(b"#!/bin/sh\n"), Err(ElfError::NotElf(_))));
        let mut arm = elf(&[1]);
        arm[18] = 183;
        assert_eq!(check_static(&arm), Err(ElfError::WrongMachine));
        let mut cut = elf(&[1, 1]);
        cut.truncate(100);
        assert!(matches!(check_static(&cut), Err(ElfError::NotElf(_))));
        let mut far = elf(&[]);
        far[0x38] = 1;
        far[0x20..0x28].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(check_static(&far), Err(ElfError::NotElf(_))));
    }
}
