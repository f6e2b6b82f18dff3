// A small JSON Schema check for the arguments editor: the keywords tool schemas use (types,
// required, properties, additionalProperties, enum, const, lengths, bounds, items, anyOf,
// oneOf, allOf, $ref to $defs). The server checks again with a full validator and is the
// authority; this only saves a round trip. Returns a list of problems, each naming its path.

function typeOf(value) {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  if (typeof value === "number") return Number.isInteger(value) ? "integer" : "number";
  return typeof value;
}

function matchesType(value, type) {
  const actual = typeOf(value);
  if (type === "number") return actual === "number" || actual === "integer";
  return actual === type;
}

function resolve(schema, root) {
  let current = schema;
  for (let depth = 0; current && current.$ref && depth < 32; depth += 1) {
    const ref = current.$ref;
    if (!ref.startsWith("#/")) return {};
    current = ref
      .slice(2)
      .split("/")
      .reduce((node, key) => (node ? node[key.replaceAll("~1", "/").replaceAll("~0", "~")] : undefined), root);
  }
  return current || {};
}

function check(value, schemaIn, root, path, problems, depth) {
  if (depth > 64 || schemaIn === true || schemaIn === undefined) return;
  if (schemaIn === false) {
    problems.push(`${path}: not allowed`);
    return;
  }
  const schema = resolve(schemaIn, root);
  const where = path || "(arguments)";
  if (schema.type !== undefined) {
    const types = Array.isArray(schema.type) ? schema.type : [schema.type];
    if (!types.some((t) => matchesType(value, t))) {
      problems.push(`${where}: expected ${types.join(" or ")}, got ${typeOf(value)}`);
      return;
    }
  }
  if (schema.enum && !schema.enum.some((v) => JSON.stringify(v) === JSON.stringify(value))) problems.push(`${where}: must be one of ${schema.enum.map((v) => JSON.stringify(v)).join(", ")}`);
  if ("const" in schema && JSON.stringify(schema.const) !== JSON.stringify(value)) problems.push(`${where}: must be ${JSON.stringify(schema.const)}`);
  if (typeof value === "string") {
    if (schema.minLength !== undefined && value.length < schema.minLength) problems.push(`${where}: at least ${schema.minLength} characters`);
    if (schema.maxLength !== undefined && value.length > schema.maxLength) problems.push(`${where}: at most ${schema.maxLength} characters`);
    if (schema.pattern) {
      try {
        if (!new RegExp(schema.pattern, "u").test(value)) problems.push(`${where}: must match ${schema.pattern}`);
      } catch {
        /* a pattern JavaScript cannot read: the server decides */
      }
    }
  }
  if (typeof value === "number") {
    if (schema.minimum !== undefined && value < schema.minimum) problems.push(`${where}: at least ${schema.minimum}`);
    if (schema.maximum !== undefined && value > schema.maximum) problems.push(`${where}: at most ${schema.maximum}`);
    if (schema.exclusiveMinimum !== undefined && value <= schema.exclusiveMinimum) problems.push(`${where}: more than ${schema.exclusiveMinimum}`);
    if (schema.exclusiveMaximum !== undefined && value >= schema.exclusiveMaximum) problems.push(`${where}: less than ${schema.exclusiveMaximum}`);
  }
  if (Array.isArray(value)) {
    if (schema.minItems !== undefined && value.length < schema.minItems) problems.push(`${where}: at least ${schema.minItems} items`);
    if (schema.maxItems !== undefined && value.length > schema.maxItems) problems.push(`${where}: at most ${schema.maxItems} items`);
    if (schema.items && typeof schema.items === "object") value.forEach((item, i) => check(item, schema.items, root, `${path}[${i}]`, problems, depth + 1));
  }
  if (typeOf(value) === "object") {
    for (const name of schema.required || []) if (!(name in value)) problems.push(`${path ? path + "." : ""}${name}: required`);
    const props = schema.properties || {};
    for (const [name, item] of Object.entries(value)) {
      const sub = path ? `${path}.${name}` : name;
      if (name in props) check(item, props[name], root, sub, problems, depth + 1);
      else if (schema.additionalProperties === false) problems.push(`${sub}: unknown argument`);
      else if (typeof schema.additionalProperties === "object") check(item, schema.additionalProperties, root, sub, problems, depth + 1);
    }
  }
  for (const part of schema.allOf || []) check(value, part, root, path, problems, depth + 1);
  for (const [key, need] of [["anyOf", (n) => n >= 1], ["oneOf", (n) => n === 1]]) {
    if (!schema[key]) continue;
    const passing = schema[key].filter((part) => {
      const found = [];
      check(value, part, root, path, found, depth + 1);
      return !found.length;
    }).length;
    if (!need(passing)) problems.push(`${where}: matches ${passing} of the ${key} alternatives`);
  }
}

/** Problems of `value` against `schema` (empty when it passes, or when there is no schema). */
export function validate(value, schema) {
  const problems = [];
  if (schema) check(value, schema, schema, "", problems, 0);
  return problems;
}
