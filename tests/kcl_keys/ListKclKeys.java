// Prints every properties key the installed KCL multilang daemon reads, one per line, sorted.
//
// Run with the daemon's jars (Java 11+ runs a single source file):
//   java -cp '<amazon_kclpy>/jars/*' tests/kcl_keys/ListKclKeys.java
// tests/test_config.py compares the output with consumer.kclkeys.KCL_KEYS.
//
// What the daemon reads, as KinesisClientLibConfigurator and MultiLangDaemonConfig do it:
//  - keys MultiLangDaemonConfig reads itself with Properties.getProperty: its PROP_* constants;
//  - every other key goes to BeanUtilsBean.setProperty(configuration, processKey(key), value)
//    with the configurator's own BeanUtilsBean; it sets a key only if PropertyUtils finds
//    it writeable and silently skips anything else. A dotted key is resolved by reading
//    each prefix, so `pollingConfig.maxRecords` reaches the nested config bean: those are
//    listed for the daemon's own config beans (its package). The SDK client and credential
//    builders (kinesisClient, dynamoDbClient, ... : BuilderDynaBean) are listed on stderr
//    as skipped: their open-ended builder properties are not accepted by kinesis-posthog.
//
// With arguments `--process-key k1 k2 ...` it prints processKey(k) for each k instead.
import java.beans.PropertyDescriptor;
import java.lang.reflect.Field;
import java.lang.reflect.Method;
import java.lang.reflect.Modifier;
import java.util.Set;
import java.util.TreeSet;
import org.apache.commons.beanutils.BeanUtilsBean;
import org.apache.commons.beanutils.DynaBean;
import org.apache.commons.beanutils.PropertyUtilsBean;
import software.amazon.kinesis.multilang.MultiLangDaemonConfig;
import software.amazon.kinesis.multilang.config.KinesisClientLibConfigurator;
import software.amazon.kinesis.multilang.config.MultiLangDaemonConfiguration;

public class ListKclKeys {
    private static final String CONFIG_PACKAGE = MultiLangDaemonConfiguration.class.getPackageName();

    public static void main(String[] args) throws Exception {
        KinesisClientLibConfigurator configurator = new KinesisClientLibConfigurator();
        if (args.length > 0 && args[0].equals("--process-key")) {
            Method processKey = KinesisClientLibConfigurator.class.getDeclaredMethod("processKey", String.class);
            processKey.setAccessible(true);
            for (int i = 1; i < args.length; i++) {
                System.out.println(processKey.invoke(configurator, args[i]));
            }
            return;
        }
        BeanUtilsBean utils = (BeanUtilsBean) field(configurator, "utilsBean");
        Object configuration = field(configurator, "configuration");
        Set<String> keys = new TreeSet<>();
        for (Field constant : MultiLangDaemonConfig.class.getDeclaredFields()) {
            if (Modifier.isStatic(constant.getModifiers()) && constant.getName().startsWith("PROP_")) {
                constant.setAccessible(true);
                keys.add((String) constant.get(null));
            }
        }
        addWriteable(utils.getPropertyUtils(), configuration, "", keys);
        keys.forEach(System.out::println);
    }

    private static void addWriteable(PropertyUtilsBean properties, Object bean, String prefix, Set<String> keys)
            throws Exception {
        for (PropertyDescriptor descriptor : properties.getPropertyDescriptors(bean)) {
            String name = descriptor.getName();
            if (properties.isWriteable(bean, name)) {
                keys.add(prefix + name);
                continue;
            }
            if (!properties.isReadable(bean, name)) {
                continue;
            }
            Object value = properties.getProperty(bean, name);
            if (value instanceof DynaBean) {
                System.err.println("skipped builder " + prefix + name + " (" + value.getClass().getName() + ")");
            } else if (value != null && value.getClass().getPackageName().equals(CONFIG_PACKAGE)) {
                addWriteable(properties, value, prefix + name + ".", keys);
            }
        }
    }

    private static Object field(Object owner, String name) throws Exception {
        Field field = owner.getClass().getDeclaredField(name);
        field.setAccessible(true);
        return field.get(owner);
    }
}
