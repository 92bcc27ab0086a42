;; system/materialiser: stores its input (an Arrow IPC stream) as the object
;; "materialised.arrows" through noetl.object_put, and returns the call's status as
;; one ASCII digit ("0" stored, "3" denied ...), which the host reads as JSON.
(module
  (import "noetl" "object_put" (func $object_put (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "materialised.arrows")
  (global $heap (mut i32) (i32.const 1024))
  (func $alloc (export "alloc") (param $size i32) (result i32)
    (local $ptr i32) (local $end i32) (local $need i32)
    (local.set $ptr (global.get $heap))
    (local.set $end (i32.add (local.get $ptr) (local.get $size)))
    (if (i32.gt_u (local.get $end) (i32.mul (memory.size) (i32.const 65536)))
      (then
        (local.set $need
          (i32.sub
            (i32.div_u (i32.add (local.get $end) (i32.const 65535)) (i32.const 65536))
            (memory.size)))
        (if (i32.eq (memory.grow (local.get $need)) (i32.const -1))
          (then (return (i32.const 0))))))
    (global.set $heap (i32.and (i32.add (local.get $end) (i32.const 7)) (i32.const -8)))
    (local.get $ptr))
  (func (export "run") (param $ptr i32) (param $len i32) (result i64)
    (local $status i32)
    (local.set $status
      (call $object_put (i32.const 16) (i32.const 19) (local.get $ptr) (local.get $len)))
    ;; the status digit goes to byte 8; output = [8, 9)
    (i32.store8 (i32.const 8) (i32.add (i32.const 48) (local.get $status)))
    (i64.or (i64.shl (i64.const 8) (i64.const 32)) (i64.const 1))))
