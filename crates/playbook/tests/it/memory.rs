//! The byte budget holds for the memory really used. An allocator counts the bytes this test's
//! thread holds while each hostile template is evaluated, and the peak stays within a few times
//! the budget, however much the template asks for (before the budget, the first template below
//! took 200 MB, and larger numbers any amount).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use playbook::template::MAX_BUILT_BYTES;

/// Counts what each thread holds, when asked to.
struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static HELD: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded to the system allocator unchanged; the counters are plain
// thread-local cells without destructors, so touching them never allocates.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        // SAFETY: forwarded as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        // SAFETY: forwarded as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn count(bytes: isize) {
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let held = HELD.get() + bytes;
            HELD.set(held);
            PEAK.set(PEAK.get().max(held));
        }
    });
}

/// The most bytes this thread held at once while `work` ran.
fn peak_of<T>(work: impl FnOnce() -> T) -> (T, usize) {
    HELD.set(0);
    PEAK.set(0);
    COUNTING.set(true);
    let result = work();
    COUNTING.set(false);
    (result, PEAK.get().max(0) as usize)
}

#[test]
fn no_template_holds_much_more_than_the_budget() {
    let templates = [
        "{{ range(2000) | join('x' * 100000) | length }}",
        "{{ ('x' * 100000000) | length }}",
        "{{ range(100000) | join('y' * 1000) | length }}",
        "{{ trigger.big | replace('', 'x' * 100) | length }}",
        "{{ ('a\n' * 100000) | indent(100000) | length }}",
        "{{ '%100000000s' | format('x') | length }}",
        "{% set ns = namespace(s='x' * 1000) %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}",
        "{{ trigger.big | regex_replace('.', '$0$0$0$0$0$0$0$0') | length }}",
        "{{ ([trigger.big] * 100000) | join | length }}",
        "{{ ([trigger.big] * 1000) | tojson | length }}",
        "{{ (trigger.big ~ trigger.big ~ trigger.big) * 10 | length }}",
        "{{ range(100000) | map('string') | join(',' * 1000) | length }}",
    ];
    let context = minijinja::Value::from_serialize(serde_json::json!({
        "trigger": { "big": "b".repeat(1024 * 1024) },
        "vars": {}, "steps": {}, "run": {}, "incident": {},
    }));
    let mut failures = Vec::new();
    for template in templates {
        let yaml = format!(
            "name: hostile\ntrigger: {{ webhook: hostile, public: true }}\nsteps:\n  - {{ id: s, uses: p/a }}\noutputs:\n  x: {}\n",
            serde_json::to_string(template).expect("quoted")
        );
        let playbook = playbook::compile(&yaml).unwrap_or_else(|d| panic!("{template}: {d:?}"));
        let (result, peak) = peak_of(|| playbook.outputs["x"].render(&context));
        if peak > 4 * MAX_BUILT_BYTES {
            failures.push(format!("{template}: held {peak} bytes ({result:?})"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
