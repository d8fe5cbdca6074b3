/* The KVM probe's boot sector (kvm-probe.bin, 512 bytes, built with
 *   as --32 -o p.o kvm-probe.S && ld -m elf_i386 -Ttext 0x7c00 --oformat binary -o kvm-probe.bin p.o
 * ). It writes its progress to the debug console (port 0x402): R (running), D (read 16 x 64
 * sectors through the BIOS, as a boot loader does), P (in protected mode), the first byte the
 * disk gave, then E after 2^27 iterations of a memory-bound loop. Under working KVM this takes
 * a fraction of a second; under TCG here under a second; under a KVM that barely runs, far
 * longer: the probe's deadline tells them apart.
 */
.code16
.globl _start
_start:
    cli
    xor %ax, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov $0x7c00, %sp
    mov $0x402, %dx
    mov $'R', %al
    out %al, %dx
    /* read 64 sectors to 0x8000 with int 13h ah=42, 16 times */
    mov $16, %bp
3:  mov $dap, %si
    mov $0x42, %ah
    mov $0x80, %dl
    int $0x13
    jc fail
    dec %bp
    jnz 3b
    mov $0x402, %dx
    mov $'D', %al
    out %al, %dx
    lgdt gdtdesc
    mov %cr0, %eax
    or $1, %al
    mov %eax, %cr0
    ljmp $0x08, $pm
.code32
pm:
    mov $0x10, %ax
    mov %ax, %ds
    mov $0x402, %dx
    mov $'P', %al
    out %al, %dx
    /* what the disk gave: the byte at 0x8000 */
    mov 0x8000, %al
    out %al, %dx
    mov $0x8000000, %ecx
4:  add %ecx, 0x9000
    dec %ecx
    jnz 4b
    mov $'E', %al
    out %al, %dx
1:  hlt
    jmp 1b
.code16
fail:
    mov $0x402, %dx
    mov $'F', %al
    out %al, %dx
2:  hlt
    jmp 2b
.align 8
gdt:
    .quad 0
    .quad 0x00CF9A000000FFFF
    .quad 0x00CF92000000FFFF
gdtdesc:
    .word 23
    .long gdt
dap:
    .byte 16, 0
    .word 64
    .word 0x8000, 0
    .quad 1
.org 510
    .byte 0x55, 0xaa
