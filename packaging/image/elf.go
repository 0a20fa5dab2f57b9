package main

import (
	"debug/elf"
	"errors"
	"fmt"
	"io"
)

// Errors returned when a binary cannot go into the image. The image has no
// dynamic loader and no libraries, so only a static Linux executable runs in it.
var (
	// errNotELF: the file is not an ELF executable.
	errNotELF = errors.New("image: not an ELF executable")
	// errDynamic: the executable asks for a loader or shared libraries.
	errDynamic = errors.New("image: binary is dynamically linked")
	// errArch: the executable's machine has no GOARCH name here.
	errArch = errors.New("image: unsupported architecture")
)

// checkStatic reports whether r holds a static ELF executable, and returns
// its architecture as an OCI platform name (GOARCH). A binary is static when
// it has no PT_INTERP program header (no dynamic loader) and no DT_NEEDED
// entry (no shared library): a Go binary built with CGO_ENABLED=0 has
// neither.
func checkStatic(r io.ReaderAt) (arch string, err error) {
	f, err := elf.NewFile(r)
	if err != nil {
		return "", fmt.Errorf("%w: %w", errNotELF, err)
	}
	defer f.Close()
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return "", fmt.Errorf("%w: type %v", errNotELF, f.Type)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return "", fmt.Errorf("%w: it names a program interpreter", errDynamic)
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		return "", fmt.Errorf("%w: reading its dynamic section: %w", errNotELF, err)
	}
	if len(libs) > 0 {
		return "", fmt.Errorf("%w: it needs %v", errDynamic, libs)
	}
	return goarch(f)
}

// goarch maps an ELF machine to the GOARCH name that OCI platforms use.
func goarch(f *elf.File) (string, error) {
	is64 := f.Class == elf.ELFCLASS64
	little := f.Data == elf.ELFDATA2LSB
	switch {
	case f.Machine == elf.EM_X86_64 && is64:
		return "amd64", nil
	case f.Machine == elf.EM_386:
		return "386", nil
	case f.Machine == elf.EM_AARCH64 && is64:
		return "arm64", nil
	case f.Machine == elf.EM_ARM:
		return "arm", nil
	case f.Machine == elf.EM_RISCV && is64:
		return "riscv64", nil
	case f.Machine == elf.EM_PPC64 && little:
		return "ppc64le", nil
	case f.Machine == elf.EM_PPC64:
		return "ppc64", nil
	case f.Machine == elf.EM_S390 && is64:
		return "s390x", nil
	case f.Machine == elf.EM_LOONGARCH && is64:
		return "loong64", nil
	}
	return "", fmt.Errorf("%w: %v (%v)", errArch, f.Machine, f.Class)
}
