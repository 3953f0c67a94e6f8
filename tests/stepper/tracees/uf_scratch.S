/* Under fire: RIP-relative instructions that also use registers implicitly, in a shared
 * library (far from the executable, so stepping them out of line needs a scratch register
 * that must be none of the registers they use). scratch_all(table) runs every site with
 * known registers and stores all 15 general registers after each into table[site][15];
 * flags[site] gets the flags where the site defines them. */
    .intel_syntax noprefix
    .data
    .balign 16
sv:    .quad 0x0123456789abcdef
sv2:   .quad 0x10
    .balign 16
sv16:  .quad 1, 2
str16: .ascii "abcdefghijklmnop"
src:   .ascii "0123456789ABCDEF"
dst:   .skip 16

    .text
    .macro SAVEALL n
    mov [r15 + \n * 120 + 0], rax
    mov [r15 + \n * 120 + 8], rbx
    mov [r15 + \n * 120 + 16], rcx
    mov [r15 + \n * 120 + 24], rdx
    mov [r15 + \n * 120 + 32], rsi
    mov [r15 + \n * 120 + 40], rdi
    mov [r15 + \n * 120 + 48], rbp
    mov [r15 + \n * 120 + 56], r8
    mov [r15 + \n * 120 + 64], r9
    mov [r15 + \n * 120 + 72], r10
    mov [r15 + \n * 120 + 80], r11
    mov [r15 + \n * 120 + 88], r12
    mov [r15 + \n * 120 + 96], r13
    mov [r15 + \n * 120 + 104], r14
    pushf
    pop qword ptr [r15 + \n * 120 + 112]
    .endm
    .macro SETALL
    mov rax, 0x1111; mov rbx, 0x2222; mov rcx, 3; mov rdx, 0x4444; mov rsi, 0x5555
    mov rdi, 0x6666; mov rbp, 0x7777; mov r8, 0x8888; mov r9, 0x9999; mov r10, 0xaaaa
    mov r11, 0xbbbb; mov r12, 0xcccc; mov r13, 0xdddd; mov r14, 0xeeee
    .endm

    .globl scratch_all, sc_shl, sc_cmpxchg, sc_mul, sc_div, sc_cmpxchg16b, sc_mulx
    .globl sc_pcmpestri, sc_rep
    .type scratch_all, @function
scratch_all:
    push rbx; push rbp; push r12; push r13; push r14; push r15
    mov r15, rdi
    SETALL
sc_shl:
    shl qword ptr [rip + sv], cl
    mov rax, [rip + sv]
    SAVEALL 0
    SETALL
    mov rax, [rip + sv]
sc_cmpxchg:
    cmpxchg [rip + sv], rbx
    SAVEALL 1
    SETALL
sc_mul:
    mul qword ptr [rip + sv]
    SAVEALL 2
    SETALL
    xor edx, edx
sc_div:
    div qword ptr [rip + sv2]
    SAVEALL 3
    SETALL
    mov rax, 1; mov rdx, 2; mov rbx, 0x33; mov rcx, 0x44
sc_cmpxchg16b:
    lock cmpxchg16b [rip + sv16]
    mov r8, [rip + sv16]; mov r9, [rip + sv16 + 8]
    SAVEALL 4
    SETALL
    mov rdx, 0x100000001
sc_mulx:
    mulx rsi, rdi, [rip + sv]
    SAVEALL 5
    SETALL
    mov eax, 16; mov edx, 16
    movdqu xmm1, [rip + str16]
sc_pcmpestri:
    pcmpestri xmm1, [rip + str16], 0x18
    SAVEALL 6
    SETALL
    lea rsi, [rip + src]; lea rdi, [rip + dst]; mov rcx, 16
sc_rep:
    rep movsb
    mov r8, [rip + dst]; mov r9, [rip + dst + 8]
    lea rax, [rip + src]; sub rsi, rax
    lea rax, [rip + dst]; sub rdi, rax
    mov rax, 0x1111
    SAVEALL 7
    pop r15; pop r14; pop r13; pop r12; pop rbp; pop rbx
    ret
    .size scratch_all, . - scratch_all
    .section .note.GNU-stack,"",@progbits
