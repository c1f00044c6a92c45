/* Counts LAPIC timer interrupts in TSC-deadline mode and prints one line per interrupt:
   "moss-test-guest: timer NNNNNNNNNNNNNNNN". The interrupt handler re-arms the deadline, so
   the count goes on only while the timer keeps firing: for tests that a vCPU's timer survives
   a save and restore (IA32_TSC before IA32_TSC_DEADLINE, the LAPIC before the MSRs). The
   count lives in r14 and the IDT is rebuilt identically by every run of this image, so the
   state of the vCPU alone carries the guest on in a fresh VM. */
#include "guest.h"
BZIMAGE_HEADER
KERNEL_ENTRY

#define LAPIC 0xfee00000
#define TIMER_VECTOR 0x40
#define SPURIOUS_VECTOR 0xff
#define DEADLINE_TICKS 100000000   /* ~40 ms at 2.5 GHz */

/* Writes gate `vector` of the IDT at rdi to point at the handler in rax. Clobbers rax. */
.macro GATE vector
  mov word ptr [rdi + \vector * 16], ax
  mov word ptr [rdi + \vector * 16 + 2], 0x10  /* 64-bit code segment */
  mov word ptr [rdi + \vector * 16 + 4], 0x8e00 /* present, DPL 0, interrupt gate */
  shr rax, 16
  mov word ptr [rdi + \vector * 16 + 6], ax
  shr rax, 16
  mov dword ptr [rdi + \vector * 16 + 8], eax
  mov dword ptr [rdi + \vector * 16 + 12], 0
.endm

guest_main:
  lea rdi, [rip + idt]
  lea rax, [rip + timer_isr]
  GATE TIMER_VECTOR
  lea rax, [rip + spurious_isr]
  GATE SPURIOUS_VECTOR
  lidt [rip + idt_ptr]
  mov rbx, LAPIC
  mov dword ptr [rbx + 0xf0], 0x100 | SPURIOUS_VECTOR   /* SVR: APIC on */
  mov dword ptr [rbx + 0x320], (2 << 17) | TIMER_VECTOR /* LVT timer: TSC deadline */
  xor r14, r14
  xor r12, r12
  call arm
  sti
wait:
  hlt
  cmp r14, r12
  je wait
  mov r12, r14
  lea rdi, [rip + timer_text]
  call puts
  mov rax, r12
  call puthex
  mov al, 10
  call putc
  jmp wait

/* IA32_TSC_DEADLINE = TSC + DEADLINE_TICKS. Clobbers rax, rcx, rdx. */
arm:
  rdtsc
  shl rdx, 32
  or rax, rdx
  add rax, DEADLINE_TICKS
  mov rdx, rax
  shr rdx, 32
  mov ecx, 0x6e0
  wrmsr
  ret

timer_isr:
  push rax
  push rcx
  push rdx
  push rbx
  inc r14
  mov rbx, LAPIC
  mov dword ptr [rbx + 0xb0], 0   /* EOI */
  call arm
  pop rbx
  pop rdx
  pop rcx
  pop rax
  iretq

spurious_isr:
  iretq

timer_text:
  .asciz "moss-test-guest: timer "
  .balign 16
idt_ptr:
  .word 256 * 16 - 1
  .quad idt
  .balign 16
idt:
  .fill 256 * 16, 1, 0
