/* Hand-written functions of the `returns` tracee: a tail call that is certainly a `jmp`,
 * and an instruction a callback can skip by writing rip. */
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
    .section .note.GNU-stack,"",@progbits
