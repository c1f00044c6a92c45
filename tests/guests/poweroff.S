/* ACPI power-off, as an OS does it on a hardware-reduced platform: find the RSDP in the BIOS
   area, follow it to the XSDT and the FADT, read the FADT's SLEEP_CONTROL_REG and write
   SLP_TYP = 5 (the \_S5_ value moss's DSDT names) with SLP_EN to it. The VM must end there
   as a power-off. Status 31: no RSDP; 32: bad RSDP checksum; 33: no FADT in the XSDT;
   34: the sleep control register is not an I/O port; 1: the write did not power off. */
#include "guest.h"
BZIMAGE_HEADER
KERNEL_ENTRY
#define RSDP_SIG 0x2052545020445352   /* "RSD PTR " as a little-endian qword */
#define XSDT_SIG 0x54445358           /* "XSDT" */
#define FADT_SIG 0x50434146           /* "FACP" */
#define SLP_TYP_S5 5
#define SLP_EN 0x20
guest_main:
  /* Scan [0xe0000, 0x100000) on 16-byte boundaries, as Linux does without UEFI. */
  mov edi, 0xe0000
  mov rax, RSDP_SIG
.Lscan:
  cmp [rdi], rax
  je .Lfound
  add edi, 16
  cmp edi, 0x100000
  jb .Lscan
  PUTS "moss-test-guest: no RSDP in the BIOS area\n"
  mov eax, 31
  ret
.Lfound:
  PUTS "moss-test-guest: RSDP at "
  mov rax, rdi
  call puthex
  PUTS "\n"
  /* The ACPI 1.0 part (20 bytes) and the whole revision-2 RSDP (36 bytes) sum to 0. */
  mov ecx, 20
  call bytesum
  test al, al
  FAIL_IF nz, 32
  mov ecx, 36
  call bytesum
  test al, al
  FAIL_IF nz, 32
  /* XSDT: 36-byte header, then 64-bit table addresses up to its length. */
  mov rsi, [rdi + 24]
  cmp dword ptr [rsi], XSDT_SIG
  FAIL_IF ne, 33
  mov ecx, [rsi + 4]
  lea rdx, [rsi + rcx]              /* End of the XSDT. */
  lea rbx, [rsi + 36]
.Lentry:
  cmp rbx, rdx
  jae .Lnofadt
  mov rsi, [rbx]
  cmp dword ptr [rsi], FADT_SIG
  je .Lfadt
  add rbx, 8
  jmp .Lentry
.Lnofadt:
  PUTS "moss-test-guest: no FADT in the XSDT\n"
  mov eax, 33
  ret
.Lfadt:
  /* SLEEP_CONTROL_REG: a generic address structure at FADT offset 244; space id 1 = I/O. */
  cmp byte ptr [rsi + 244], 1
  FAIL_IF ne, 34
  PUTS "moss-test-guest: sleep control port "
  mov rax, [rsi + 248]
  call puthex
  PUTS "\n"
  mov rdx, rax
  mov al, (SLP_TYP_S5 << 2) | SLP_EN
  out dx, al
  /* Power-off is synchronous in moss: this vCPU does not run on. Give it 2 s anyway. */
  PIT_DELAY 2*PIT_HZ
  PUTS "moss-test-guest: the S5 write did not power off\n"
  mov eax, 1
  ret

/* al = sum of the ecx bytes at rdi, mod 256. Preserves rdi. */
bytesum:
  push rdi
  xor eax, eax
2: add al, [rdi]
  inc rdi
  dec ecx
  jnz 2b
  pop rdi
  ret
