#!/bin/sh
# `cargo run` for the chip build (firmware/esp.toml's runner), from the workspace root:
# flashes the ELF with the bootloader esp-idf-sys built from firmware/sdkconfig.defaults
# (it copies bootloader.bin beside the ELF) and the fleet's partition table, then shows
# the log. espflash's own bundled bootloader is built without app rollback: a device
# flashed with it never puts a new image on probation, so it never rolls a bad one back.
set -eu
elf=$1
shift
bootloader=$(dirname "$elf")/bootloader.bin
if [ ! -f "$bootloader" ]; then
    echo "flash.sh: no $bootloader; esp-idf-sys writes it as it builds the firmware (--features chip)" >&2
    exit 1
fi
exec espflash flash --monitor --bootloader "$bootloader" \
    --partition-table partitions/partitions.csv "$elf" "$@"
