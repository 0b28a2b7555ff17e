#!/bin/sh
# Build the SCPS-TP reference gateway (MITRE SCPS RI 1.1.146, GitHub Linjay/SCPS_Project)
# OUT OF THIS REPOSITORY, for benchmarks/interop_reference_gateway.py.  Its source carries
# a restrictive notice: it is built and run as a black-box peer, never copied in here.
#
#   scripts/build-scps-reference-gateway.sh SRC_DIR
#
# SRC_DIR: an unpacked copy of the repository (it is built in place).  Needs gcc with
# -m32 (Debian: gcc-multilib): the code is 32-bit only (pointers cast to int, i386 asm;
# a 64-bit build segfaults in tp_BuildHdr on the first SYN).  The build: Linux tap mode
# (README.GATEWAY.LINUX.TAP), low-CPU polling, a 100 MB buffer pool instead of 10 MB.
set -eu
SRC=$(cd "$1" && pwd)
find "$SRC" -name configure -exec chmod +x {} \;
chmod +x "$SRC/source/config.guess"
cd "$SRC/apps" && sh ./configure >/dev/null
cd "$SRC/source" && sh ./configure --gateway=yes --tap=yes --low_cpu=yes --memory=100000000 >/dev/null
# gcc 12: -fcommon (the headers define globals), -m32; dash's echo breaks the
# generated version.c (an embedded \n), so write it once and drop the rule.
sed -i 's/^CFLAGS = -Wall /CFLAGS = -m32 -w -fcommon -fno-strict-aliasing /; s/^version.c : Makefile/version.c.unused : Makefile/' Makefile
printf 'char scps_version [] = "SCPS RI Version 1.1.146 (tap, low_cpu, -m32)";\n' > version.c
rm -f ./*.o libscps.a ../lib/libscps.a
make -k >"$SRC/build-source.log" 2>&1
cd "$SRC/apps"
sed -i 's/^CFLAGS= \$(SYMTAB) \$(OS)$/CFLAGS= $(SYMTAB) $(OS) -m32 -w -fcommon/; s/^\(\t$(CC) $(SYMTAB) $(OPTFLAG)\) /\1 -m32 /' Makefile
rm -f gateway gateway.o
make gateway >"$SRC/build-apps.log" 2>&1
file "$SRC/apps/gateway"
