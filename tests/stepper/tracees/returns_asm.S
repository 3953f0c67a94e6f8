/* Hand-written functions of the `returns` tracee: a tail call that is certainly a `jmp`,
 * an instruction a callback can skip by writing rip, and a return address that is also a
 * jump target (rejoin). */
    .text
    .globl tail_outer, tail_inner, skippable, skip_site, skip_next
    .type tail_outer, @function
tail_outer:
    lea 1(%rdi), %edi
    jmp tail_inner
    .size tail_outer, .-tail_outer
    .type tail_inner, @function
tail_inner:
    lea (%rdi,%rdi), %eax
    ret
    .size tail_inner, .-tail_inner
    .type skippable, @function
skippable:
    mov %edi, %eax
skip_site:
    add $100, %eax
skip_next:
    ret
    .size skippable, .-skippable
/* rejoin(n): for i < n, i == 1 calls tail_inner(1) (2); every other i jumps straight to
 * rejoin_site, the return address of that call, with eax = 0. Returns the sum (2). */
    .globl rejoin, rejoin_site
    .type rejoin, @function
rejoin:
    push %rbx
    push %r12
    push %r13
    mov %edi, %ebx
    xor %r12d, %r12d
    xor %r13d, %r13d
1:  cmp %ebx, %r12d
    jge 2f
    xor %eax, %eax
    cmp $1, %r12d
    jne rejoin_site
    mov %r12d, %edi
    call tail_inner
rejoin_site:
    add %eax, %r13d
    inc %r12d
    jmp 1b
2:  mov %r13d, %eax
    pop %r13
    pop %r12
    pop %rbx
    ret
    .size rejoin, .-rejoin
    .section .note.GNU-stack,"",@progbits
